"""Category, priority and suggested rejection of a case from keyword rules (config's first)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from daemon.config import ClassifyConfig, ClassifyRule, Config
from daemon.settings import CLASSIFY_MODEL_FILE
from handlers.context import BlobWriter, Prepared
from handlers.scan import CJK, Scanned, scanned


# -- keyword sets ----------------------------------------------------------------------------
# A keyword set is lines of alternatives, each line in one script. The Chinese lines (any line
# with a Han character) make one regex, the English lines another, and a text is scanned only by
# the ones its scripts can match: a Chinese complaint with no Latin letter skips every English
# word. Both scan the lowercased text without IGNORECASE, so English lines are written lowercase.
# English lines match with ASCII word boundaries: "swallowed油炸锅" holds the word "swallowed",
# and "repair[a-z]*" stops where the Chinese begins.
# Every Chinese alternative starts with a literal character, so re jumps from one possible first
# character to the next; one alternative starting with a group or a lookbehind makes the whole
# scan try every alternative at every character, about four times slower. Hence "爆炸(?<!信息
# 爆炸)" for "(?<!信息)爆炸", and "还(没|未|不)...|一直(没|未|不)..." spelled out.
def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern."""
    found, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":  # a set may hold | and parentheses
            i = pattern.index("]", i + 2) + 1
            continue
        depth += (char == "(") - (char == ")")
        if char == "|" and depth == 0:
            found.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*found, pattern[start:]]


_WORDS_FIRST = re.compile(r"\\b\((\?:)?([^()|\\]+(\|[^()|\\]+)*)\)(?![?*+{])")


def _by_first_letter(pattern: str) -> str:
    r"""The same English alternatives, gathered under their first letter: r"\bfire\b|\bfood"
    becomes r"\b(?:f(?:ire\b|ood))". re tries every alternative at every word start, so a
    hundred of them cost ~300 us on a long English mail; gathered, the first letter rules out
    all but a few. A leading word group ("\b(was|were) hurt") is spelled out first; an
    alternative of any other shape stays as it is, after the gathered ones (alternatives with
    different first letters cannot match at the same place, so the order that decides between
    two matches at one place is kept within each letter)."""
    spelled: list[str] = []
    for alternative in _alternatives(pattern):
        words = _WORDS_FIRST.match(alternative)
        if words is None:
            spelled.append(alternative)
            continue
        rest = alternative[words.end() :]
        spelled += [rf"\b{word}{rest}" for word in words.group(2).split("|")]
    letters: dict[str, list[str]] = {}
    others: list[str] = []
    for alternative in spelled:
        first = alternative[2:3]
        if alternative.startswith("\\b") and first.isalpha() and alternative[3:4] not in "?*+{":
            letters.setdefault(first, []).append(alternative[3:])
        else:
            others.append(alternative)
    gathered = "|".join(f"{letter}(?:{'|'.join(rests)})" for letter, rests in letters.items())
    return "|".join(([rf"\b(?:{gathered})"] if gathered else []) + others)


class Keywords:
    def __init__(self, *lines: str) -> None:
        zh = [line for line in lines if CJK.search(line)]
        en = [line for line in lines if not CJK.search(line)]
        for line in en:
            if line != line.lower():
                raise ValueError(f"English keywords are matched lowercase: {line!r}")
        self.zh = re.compile("|".join(zh)) if zh else None
        # ASCII word boundaries: "swallowed" ends a word before the Chinese written right after.
        self.en = re.compile(_by_first_letter("|".join(en)), re.ASCII) if en else None

    def finditer(self, text: Scanned) -> Iterator[re.Match[str]]:
        """Matches in the text's scripts: the Chinese ones, then the English ones."""
        if text.cjk and self.zh is not None:
            yield from self.zh.finditer(text.text)
        if text.latin and self.en is not None:
            yield from self.en.finditer(text.text)

    def search(self, text: Scanned) -> re.Match[str] | None:
        """The first match in the text, whichever script it is in."""
        found = [
            match
            for pattern, present in ((self.zh, text.cjk), (self.en, text.latin))
            if present and pattern is not None and (match := pattern.search(text.text))
        ]
        return min(found, key=lambda m: m.start(), default=None)


# -- categories ------------------------------------------------------------------------------
# Each category lists short patterns; the built-in category is the one with the most distinct
# matches (a complaint names its problem several ways, and mentions others in passing: "the
# parcel came fast, but the kettle leaks" is about quality). Ties go to the earlier category.
_CATEGORIES: dict[str, Keywords] = {
    "food_safety": Keywords(
        r"食品|食物|变质|过期|异物|发霉|霉变|长毛|虫子|苍蝇|蟑螂|头发丝?|腹泻|拉肚子|呕吐|上吐下泻",
        r"生产日期|保质期|添加剂|外卖|饭菜|菜品|餐厅|饭店|奶粉|肉|牛奶|酸奶|饮料|零食|月饼|面包"
        r"|食用",
        r"巧克力|花生|坚果|配料表?|饼干|糖果|过敏原",
        r"\bfood\b|\bexpired\b|\bspoil(ed|t)\b|\bmou?ld(y)?\b|\brotten\b|\bfood poisoning\b",
        r"\b(insect|bug|worm|cockroach|hair|fly|glass) (was )?in (the|my) (food|meal|soup|salad|"
        r"dish|bread|drink|milk)\b|\bdiarrh(o)?ea\b|\bvomit[a-z]*|\bbest before\b|\buse[- ]by\b",
        r"\brestaurant\b|\btakeaway\b|\btake-out\b|\bmeal\b|\binfant formula\b|\bmilk powder\b",
        r"\bsandwich\b|\byog(h)?urt\b|\bsnacks?\b|\bsalad\b|\bsoup\b|\bchicken\b|\bmeat\b",
        r"\bchocolate\b|\bpeanuts?\b|\bnuts\b|\bingredients?\b|\bbiscuits?\b|\bcandy\b",
    ),
    "privacy": Keywords(
        r"个人信息|隐私|泄露|泄漏|骚扰电话|推销电话|营销电话|骚扰短信|短信轰炸|信息被(卖|泄)"
        r"|未经(我的?)?(同意|允许|授权)",
        r"身份证(号|信息)|通讯录|人脸|注销账号|注销账户|个人资料|资料被(泄|卖|外泄)"
        r"|没(有)?经过?(我的?)?(同意|允许|授权)|不经(过)?我的?(同意|允许)",
        r"\bprivacy\b|\bpersonal (data|information|details)\b|\bdata (leak|breach)\b|\bleaked\b",
        r"\bspam (calls|texts|messages|emails?)\b|\bmarketing (calls|texts|emails?)\b",
        r"\bwithout (my )?(consent|permission|authori[sz]ation)\b|\bgdpr\b|\bpipl\b",
        r"\bsocial security (number|card)\b|\bpersonal(ly)? identif(ying|iable) information\b",
        r"\bsold my (data|details|number)\b",
        r"\bdelete my (data|account)\b|\bunsubscribe\b",
        # Credit reports pulled or used without permission, identity theft (consumer finance).
        r"征信|信用报告|信用记录|被查询|盗用(我的?)?(身份|信息)|冒用(我的?)?(身份|名义|信息)|冒名|身份被盗",
        r"\binquir(y|ies)\b|\bidentity theft\b|\bstole my identity\b|\bnot mine\b"
        r"|\bopened in my name\b|\bnot my account\b|\bfraudulent(ly)? (account|accounts|opened)\b"
        r"|\bsecurity freeze\b|\bpermissible purpose\b|\bfcra\b|\bcredit (report|reports|file"
        r"|bureaus?)\b|\bconsumer report\b|\bpulled my credit\b|\bhard (pull|inquiry)\b",
    ),
    "false_advertising": Keywords(
        r"虚假宣传|虚假广告|夸大|与(商品)?(描述|宣传|图片|页面|详情页|介绍)不符|货不对板|假货|假冒"
        r"|冒充",
        r"宣传.{0,8}(不符|不实|虚假|不一样)|欺骗消费者|名不副实|虚标|广告.{0,6}(说|称|写)|诱导"
        r"|所谓的?",
        r"\bmisleading\b|\bfalse advertis[a-z]*|\bnot as (described|advertised|pictured)\b",
        r"\badvertised (as|that)\b|\bclaimed (to|that)\b|\bfake\b|\bcounterfeit\b"
        r"|\bbait[- ]and[- ]switch\b",
        r"宣传说|广告说|说是.{0,10}(实际|其实|结果|拆开|收到)|实际(上)?是|其实是|翻新|仿冒|仿品|骗人"
        r"|描述不符|(和|跟|与)(描述|图片|宣传)不(符|一样)",
        r"\bclaimed it\b|\b(box|label|packaging|website|page) (says|said|claims)\b",
        r"\bfalse (claim|claims|promise)\b|\bthe (ad|advert|advertisement|listing) (said|says"
        r"|claimed)\b",
        # Not told, hidden, not as the contract or the plan said (contracts, real estate).
        r"未.{0,6}告知|没有?告知|隐瞒|欺瞒|不实|未如实|没有如实|与.{0,12}不符|不相符|误导|承诺",
        r"\bpromis(e|ed|es)\b|\bwas told\b|\bmis(led|lead|leading)\b|\bdecept[a-z]*|\bdeceiv[a-z]*"
        r"|\blied\b|\blying\b|\bnever (applied|signed up)\b|\bdid not apply\b|\bpromo(tion)?"
        r"(al)?( code| offer)?\b|\bnot (disclosed|informed)\b|\bnever (disclosed|informed)\b",
    ),
    "product_quality": Keywords(
        r"质量|故障|损坏|坏了|破损|漏水|漏电|缺陷|开裂|裂了|裂开|断了|不能用|无法使用|失灵|死机"
        r"|异响",
        r"掉色|褪色|起球|甲醛|爆炸(?<!信息爆炸)(?!性)|炸(?<!气炸)(?<!油炸)(了|开|裂)(?!锅)|起火"
        r"|着火|自燃|冒烟|鼓包|发烫|过热|不制冷|不开机|无法开机|开不了机|不能开机",
        r"零件|脱落|掉漆|刹车|失灵|触电|警示",
        # Everyday faults: screens, power, things coming apart, noise (no safety word: not urgent).
        r"竖线|横线|花屏|黑屏|闪屏|白屏|蓝屏|坏点|漏光|屏幕.{0,4}闪|萤幕.{0,4}闪|死屏",
        r"开不了机|开不开机|充不进电|充不上电|充不了电|无法充电|不能充电|不充电|自动重启|反复重启"
        r"|一直重启|老是重启|自动关机",
        r"开胶|脱胶|鞋底.{0,2}(掉|脱|开|断)|开线|线头|缝线|跑绒|钻绒|拉链.{0,2}(坏|断|拉不)|裂痕"
        r"|裂缝|裂纹|坏掉|掉了一块|生锈|变形|起皮|掉皮",
        r"漏油|漏气|漏液|渗水|噪音|噪声|异音|没(有)?声音|没反应|不冷(?!不热)|不制热|不加热",
        r"\bquality\b|\bdefect[a-z]*|\bbroken\b|\bbroke\b|\bfaulty\b|\bstopped working\b",
        r"\b(does|did)n'?t work\b|\bnot working\b|\bcrack(ed|s)?\b|\bleak(s|ed|ing)?\b",
        r"\bexplod[a-z]*|\bexplosion\b|\bmalfunction[a-z]*|\boverheat[a-z]*",
        r"\b(caught|catch) fire\b",
        r"\bfault(y|s)?\b|\bwiring\b|\belectric(al)? shock\b",
        r"\bfell apart\b|\bswollen\b|\bswelling\b|\bpeeling\b|\bshoddy\b|\bdead on arrival\b",
        # Everyday faults: screens, power, things coming apart, noise (no safety word: not urgent).
        r"\b(vertical|horizontal) lines\b|\blines on the screen\b|\bdead pixels?\b"
        r"|\bflicker[a-z]*|\b(black|blank) screen\b",
        r"\bwon'?t (turn on|switch on|power on|boot|start|charge|hold a charge)\b"
        r"|\b(does|did)n'?t (turn on|switch on|power on|charge)\b|\bnot charging\b"
        r"|\bkeeps (restarting|rebooting|turning off|shutting down|crashing)\b",
        r"\bcame (off|apart|unstuck|loose|unglued)\b|\bfalling apart\b|\bstitching\b|\bseams?\b"
        r"|\bzip(per)? (broke|is broken|split|stuck)\b|\bsnapped\b|\bripped\b",
        r"\bloud noise\b|\bnoisy\b|\brattl(e|es|ing)\b|\bbuzzing\b|\bno sound\b|\bin one ear\b",
        # Vehicles (owners name the part that failed) and homes (leaks, cracks, workmanship).
        r"\btransmission\b|\bbrak(e|es|ing)\b|\babs\b|\bengine\b|\bstall(s|ed|ing)?\b"
        r"|\bsteering\b|\bsuspension\b|\bseat ?belts?\b|\btires?\b|\btyres?\b|\baxle\b"
        r"|\bair ?bags?\b|\brecall(s|ed)?\b|\bthrottle\b|\bradiator\b|\balternator\b"
        r"|\bfuel (pump|leak|line)\b|\bheadlights?\b|\bwindshield\b|\bwipers?\b|\blatch\b"
        r"|\brims?\b|\bcorro(sion|ded)\b|\brust(ed|y)?\b|\binstrument panel\b|\bdashboard\b"
        r"|\bwarning light\b|\bcheck engine\b|\bmisfir[a-z]*|\bjerk(s|ed|ing)?\b|\bveer[a-z]*",
        r"壁癌|渗漏|瑕疵|施工|结构|龟裂|水压|发霉|霉斑|刹车|变速箱|发动机|熄火|方向盘|安全带|轮胎|召回",
    ),
    "logistics": Keywords(
        r"快递|物流|配送|发货|送货|包裹|运单|签收|丢件|丢了件|延误|迟迟未到|没收到|未收到|派送"
        r"|快递员|运输",
        r"还(没|未|不)(到|送到|发货|收到)|一直(没|未|不)(到|送到|发货|收到)"
        r"|迟迟(没|未|不)(到|送到|发货|收到)|至今(没|未|不)(到|送到|发货|收到)",
        r"送错|送货上门|上门取件|驿站",
        r"\b(weeks?|days?) late\b|\blate (delivery|again)\b|\bdelayed\b",
        r"\bdeliver(y|ies|ed)?\b|\bshipping\b|\bshipment\b|\bcourier\b|\bparcel\b|\bpackage\b",
        r"\btracking\b|\bnever (arrived|came|received)\b|\b(has|had|hasn't"
        r"|has not) (not )?arrived\b",
        r"\blost in transit\b|\bdispatch(ed)?\b|\bleft (it |the parcel )?(at|outside)\b",
    ),
    "price": Keywords(
        r"价格|多收|收费|乱收费|价格欺诈|差价|涨价|标价|明码标价|先涨后降|扣费|乱扣|自动续费"
        r"|重复扣款|多扣|价保",
        r"\bovercharg[a-z]*|\bprice[ds]?\b|\bpricing\b|\bcharged (me )?(twice|double|more)\b",
        r"\bdouble[- ]charged\b|\bhidden (fee|fees|charge|charges)\b|\bsurcharge\b",
        r"\bauto[- ]?renew[a-z]*|\bsubscription fee\b|\bprice tag\b|\bbilled\b|\bbilling\b",
        # Fees, interest and money taken without consent (consumer finance, agents' fees).
        r"服务费|管理费|超收|收取|佣金|报酬|违约金|利息|利率|手续费|滞纳金|罚息|扣款|扣钱|私自扣|自动扣"
        r"|乱收|多扣|砍头息|年化|费用",
        r"\bfees?\b|\binterest( rate)?\b|\bapr\b|\bcharg(e|es|ed|ing)\b|\bunauthori[sz]ed "
        r"(charges?|transactions?|transfers?|withdrawals?|debits?|payments?)\b|\bdebit(s|ed)\b"
        r"|\bwithdr[ae]w[a-z]*|\boverdraft\b|\bcash advance\b|\bpercent\b|\b\d+ ?%"
        r"|\btook \$|\btaking (money|\$)",
    ),
    "service_attitude": Keywords(
        r"态度|辱骂|骂人|骂我|不理|推诿|推脱|敷衍|挂电话|挂断|爱答不理|冷漠|不耐烦|服务差|服务恶劣"
        r"|嘲讽|威胁我",
        r"推托|说话(很|太)?冲|爱买不买|翻白眼|白眼",
        r"\brude(ly|ness)?\b|\bimpolite\b|\battitude\b|\bignored\b|\bhung up\b|\bshouted\b",
        r"\byelled\b|\binsult[a-z]*|\bunprofessional\b|\bdisrespect[a-z]*|\bcondescending\b",
        r"不理会|不回应|未回应|没有?回应|失联|联系不上|不回复|没人管|无人处理|不处理|踢皮球",
        r"\bcustomer service\b|\brepresentatives?\b|\bon hold\b|\bnever (called|got|wrote) back"
        r"\b|\bno (one|body) (helps?|helped|responded|called)\b|\bunresponsive\b|\bnever "
        r"(responded|replied)\b|\bhave(n'?t| not) heard\b|\bno (reply|response)\b|\bnot (been )?"
        r"resolved\b|\bkept waiting\b|\bwaiting for\b",
    ),
    "after_sales": Keywords(
        r"未(收到)?退款|没有?(收到)?退款|还没有?(收到)?退款|退款.{0,6}(未|没|还没)到"
        r"|寄回|退回.{0,10}(未|没)",
        r"售后|保修|三包|维修|返修|退换|拒绝退|不给退|不予退|不退|不换|不给换|拒绝换"
        r"|不给修",
        r"保固|还没退|驳回",  # a demand (要求退款, "I want a refund") does not decide the category
        r"\bafter[- ]sales\b|\bwarranty\b|\bguarantee\b|\brepair[a-z]*"
        r"|\b(still no|no|without a) refund\b|\brefund (never|has not|hasn'?t|still)\b"
        r"|\breturned (it|the [a-z]+|my [a-z]+)\b|\bsent (it|the [a-z]+|them) back\b",
        r"\brefus[a-z]* (to )?(a |my |the )?(refund|return|exchange|repair)\b",
        r"\breturn policy\b|\bwon'?t (refund|replace|exchange|repair)\b|\bexchange\b",
        # Money back refused: deposits, down payments, cancelled contracts.
        r"返还|退还|退回|退费|退定|定金|订金|斡旋金|押金|解除(买卖)?(契约|合同|合约)|解约|取消(订单|合同)",
        r"\brefund[a-z]*|\bchargeback\b|\bmoney back\b|\bdeposit back\b|\bcancel(l)?(ed|ation)\b",
    ),
}

# -- urgency ---------------------------------------------------------------------------------
# Safety risks: the words people use, with the look-alikes that are not (信息爆炸, 气炸了,
# 电脑中毒, 心灵受伤; Burnaby, firewall, "fired the courier", "shocked by the service").
_CHILD = ("儿童", "孩子", "小孩", "宝宝", "婴儿", "幼儿", "女儿", "儿子", "小朋友")
# A child with a harm, or worried for (健康), or a spoiled or bug-ridden thing a child used.
_HARM = "(危险|卡住|夹住|勒住|吞下|烫到|划破|健康|误食|虫|过敏|生病|发烧|红肿|呕吐|拉肚子|腹泻)"
_SPOILED = ("虫", "发霉", "霉变", "变质", "过期", "异物")
_WHO = "(" + "|".join(_CHILD) + ")"
_SAFETY = Keywords(
    r"爆炸(?<!信息爆炸)(?!性)|炸(?<!气炸)(?<!油炸)(了|开|裂|伤)(?!锅)|爆裂|起火|着火|失火|火灾"
    r"|自燃|冒烟|冒火|火花",
    r"触电|漏电|电击|电到|中毒(?<!电脑中毒)(?<!手机中毒)(?<!系统中毒)(?<!软件中毒)(?<!病毒中毒)"
    r"|过敏|窒息|噎住|卡喉|误食|误吞",
    r"烫伤|烧伤|灼伤|划伤|割伤|砸伤|摔伤|扎伤|夹伤"
    r"|受伤(?<!心灵受伤)(?<!感情受伤)(?<!自尊心受伤)(?<!心里受伤)|伤口|流血|骨折",
    r"送医|住院|急诊|抢救|上吐下泻|安全隐患|就医|救护车|昏迷|晕倒|休克|死亡(?<!非自然死亡)|身亡"
    r"|丧生|致死|坍塌|倒塌",
    # Things falling from a building (外墙瓷砖脱落) endanger people below.
    r"外墙.{0,6}(掉落|脱落|坠落)|瓷砖.{0,6}(掉落|脱落|坠落)|磁砖.{0,6}(掉落|脱落|坠落)"
    r"|玻璃.{0,6}(掉落|坠落|爆)|天花板.{0,6}(掉落|脱落|塌)|吊顶.{0,6}(掉落|脱落|塌)",
    r"烧焦|烧毁|烧坏|明火|爆燃|烧起来|车祸|撞车|追尾|相撞|撞上|侧翻|翻车|交通事故|安全事故",
    "|".join(f"{who}.{{0,20}}{_HARM}" for who in _CHILD),
    "|".join(f"{what}.{{0,20}}{_WHO}" for what in _SPOILED),
    r"\bexplo(de|ded|des|ding|sion|sions)\b|\b(caught|catch|catches|catching|on) fire\b"
    r"|\bfire (broke out|hazard)\b|\bburst into flames?\b|\bin flames\b|\bsparks\b",
    r"\belectric(al|ity)? shocks?\b|\belectrocut[a-z]*|\bgot a shock\b",
    r"\b(burn|burns|burned|burnt|scald|scalds|scalded)\b",
    # Inflected and misspelt ("injuried"); "hurt" only of people ("it hurt my credit" is not).
    r"\binjur[a-z]*|\b(was|were|got|been|is|are|get) (badly |seriously |severely )?hurt\b"
    r"|\bhurt (my|his|her|their|our) (hand|arm|leg|back|neck|head|finger|foot|eye|face)s?\b",
    r"\bhospital(i[sz]ed|i[sz]ation)?\b|\bemergency (room|department)\b|\ba&e\b|\bstitches\b"
    r"|\bbleeding\b|\ber\b(?<=(to|he|in|at) er)|\bambulance\b|\bparamedics?\b"
    r"|\bintensive care\b|\bmedical (attention|treatment)\b",
    r"\bbruis(e|es|ed|ing)\b|\bconcussion\b|\bwhiplash\b|\bsevered (finger|hand|arm|leg|toe)\b"
    r"|\bbroken (hand|arm|leg|wrist|ankle|nose|ribs?|bones?|finger|toe|neck|back|collarbone)\b"
    r"|\b(femur|tibia|pelvis|hip|skull|rib|bone|wrist|ankle|arm|leg) fractures?\b"
    r"|\bfractured (his|her|my|their|a|an) [a-z]+\b|\bfractures? (to|of) (the|his|her|my) "
    r"|\bbroke (his|her|my|their|a) (hand|arm|leg|wrist|ankle|nose|ribs?|finger|toe|neck|back|hip)"
    r"|\b(lost|losing) conscious[a-z]*|\bunconscious\b|\bkilled\b|\bfatal(ity|ities)?\b",
    # Fire and smoke as people report them: firefighters, flames, smoke pouring out.
    r"\bflames?\b|\bfire ?(department|dept|fighters?|truck|men)\b|\bon fire\b|\bengulfed\b"
    r"|\bfire\b(?! ?(tv|tablet|stick|hd|sale|drill|wall|works))(?<!kindle fire)"
    r"|\bsmoke (came|coming|was coming|poured|pouring|billow[a-z]*|from|out|filled)\b"
    r"|\bsmoking (from|under|out)\b|\bsmou?lder[a-z]*"
    r"|\bsmoke\b(?! (detector|alarm|free|smell|shop|test))(?<!no smoke)",
    r"\bstrangl[a-z]*|\bcould ?n'?t breathe\b|\bcould not breathe\b",
    # Vehicles: crashes, collisions, rollovers, airbags; "the app crashed" is not one.
    r"\baccidents?\b(?<!by accident)|\bcollided\b|\brear[- ]?ended\b"
    r"|\bhit (a|an|the|another|two|metal|a parked) [a-z ]{0,12}(post|pole|tree|wall|car|vehicle"
    r"|truck|guard ?rail|curb|median|building|pedestrian|person|deer)\b"
    r"|\b(unintended|sudden|uncontrolled) acceleration\b|\baccelerat[a-z]* [a-z ]{0,20}"
    r"uncontrollabl[ey]\b"
    r"|\bcollis(ion|ions|on)\b(?! (warning|avoidance|mitigation|alert|sensor|system|assist))"
    r"|\bhead[- ]on\b|\bt-?boned\b|\b(was|were|got|been|is) total(l)?ed\b"
    r"|\bimpact\b((?<=on impact)|(?<=of impact)|(?<=upon impact)|(?<=during impact))",
    r"\bcrash(ed|es|ing)? into\b|\b(car|vehicle|truck|head-on|rear-end|frontal|side) crash"
    r"|\bin (a|the) crash\b|\bcrash(ed)? (the|my|our|his|her) (car|vehicle|truck|van|suv|bike)\b"
    r"|\b(ran|slammed|smashed|rolled|veered|careened|plowed|sending [a-z]+|sent [a-z]+) into "
    r"(a|an|the|another|oncoming) (tree|pole|ditch|parked|car|vehicle|truck|guard ?rail|median|wall"
    r"|building|garage)|\binto (a|the) (tree|pole|ditch|guard ?rail|parked car)\b"
    r"|\bimpact (to|on) (the|his|her|my|our) (foot|head|leg|arm|hand|face|body|chest)\b",
    r"\b(vehicle|car|truck|suv|van|jeep|it) (rolled|flipped) over\b|\brollover\b"
    r"|\brolled over (multiple|several|two|three|four|\d+) times\b|\brolling the (truck|car|"
    r"vehicle|suv)\b|\boverturned\b|\blanding on its (top|roof|side)\b",
    r"\bair ?bags?\b[^.!?\n]{0,30}\b(deploy[a-z]*|inflat[a-z]*|went off|came out|exploded)\b"
    r"|\b(deploy[a-z]*|inflat[a-z]*)\b[^.!?\n]{0,20}\bair ?bags?\b",
    r"\bpoison(ed|ing|ous)?\b|\ballerg(y|ies|ic)\b|\banaphyla[a-z]*",
    r"\bchok(e|ed|es|ing)\b|\bsuffocat[a-z]*|\bswallowed\b",
    r"\bsafety (hazard|risk)s?\b",
    r"\b(child|children|kid|kids|toddler|baby|infant)\b[^.!?\n]{0,40}"
    r"\b(danger[a-z]*|swallow[a-z]*|trapped|sharp edges?)\b",
)
# Many complainants, same cause (PROCEDURE §3: 群体性投诉).
_MANY = ("上百", "几十", "数十", "数百", "上千")
# "多人" alone is not many complainants: "拉了30多人都不动" (I invited 30-odd people to a
# promotion) is one consumer. Many people must be hit by, or complain of, the same thing.
_HIT = "(都)?(遇到|被骗|被坑|上当|受害|受骗|中毒|受伤|出现|有同样|有类似|反映|投诉|维权|集体)"
_GROUP = Keywords(
    f"多人{_HIT}|多名(消费者|用户|顾客|业主|家长|学生|乘客)"
    r"|集体(投诉|维权|中毒)|群体|大批(消费者|用户|顾客)|众多(消费者|用户|顾客)"
    f"|很多(人|消费者|用户|顾客|业主|家长){_HIT}",
    "|".join(f"{n}(个|名|位)?(人|消费者|用户|顾客|家长|业主)" for n in _MANY),
    r"联名|维权群",
    r"\bmany of us\b|\bmany (other )?(customers|consumers|people|buyers|parents|residents)\b"
    r"|\b(dozens|hundreds|thousands) of (us|customers|consumers|people|buyers|families)\b"
    r"|\bgroup complaint\b|\bclass action\b|\bcollective complaint\b|\ball of us\b"
    r"|\bother (customers|buyers|people) (have|had|reported) the same\b"
    r"|\bwe are \d+ (customers|families|parents|buyers|residents)\b|\bseveral families\b",
)
# A safety word right after a negation is not a safety risk ("没有人受伤", "no one was injured").
# The negation must be within a few characters (zh) or five words (en), with no punctuation
# between: "没有说明书，孩子烫伤了" and "not only did it explode" stay urgent.
_NEGATION_ZH = re.compile(
    r"(没(?!想到|料到)有?人?|无人|未(?!成年)|并未|从未|不会|不可能|不至于|以免|避免|防止)"
    r"[^，。,.!！？?；;\s]{0,3}$"
)
# Out-of-scope mentions are also denied with "is not" (不是私下交易, 并非处理品), or are the
# business's claim the consumer disputes (售后却说过了保修期, "the store says it is out of
# warranty").
_NEGATION_ZH_IS = re.compile(
    r"((不是|并非|并不是|不属于|没有?|未|并未|尚未|还没有?)[^，。,.!！？?；;\s]{0,3}"
    r"|(说|称|声称|表示|认为|借口|理由是)[^，。,.!！？?；;\s]{0,4})$"
)
_CLAIMED_EN = re.compile(
    r"\b(says?|said|claims?|claimed|told me|insists?|insisted)( that)?( it('s| is| was)| they| we"
    r"| i('m| am| was))?\s*$",
    re.IGNORECASE,
)
_NEGATION_EN = re.compile(
    r"\b(no|not(?! only)|never|nobody|none|without|neither|nor|\w+n't)\b"
    r"(\s+(one|body|was|were|is|are|been|got|get|being|any|serious|seriously|badly|the|a|an|"
    r"it|he|she|they|we|i|did|do|does|has|have|had|catch|harmed|hurt|actually|yet|involved|in))"
    r"{0,5}\s*$",
    re.IGNORECASE,
)


def _negated(text: str, start: int, zh: re.Pattern[str] = _NEGATION_ZH) -> bool:
    before = text[max(0, start - 40) : start]
    if zh.search(before[-10:]):
        return True
    return bool(_NEGATION_EN.search(before))


# What was avoided or only feared is not a report of harm: "to keep from having an accident",
# "could cause a fire" (a hazard without an event; "caught fire" stays urgent).
_AVOIDED_EN = re.compile(
    r"\b(avoid(ed|ing)?|prevent(ed|ing)?|keep( [a-z]+)? from|kept( [a-z]+)? from|almost|nearly"
    r"|could(?!n't| not)|would(?!n't| not)|might|may|risk of|in case of|potential(ly)?|afraid"
    r"|fear|worried)\b[^.!?,;\n]{0,60}$"
)


def _safety_risk(text: Scanned) -> str | None:
    for match in sorted(_SAFETY.finditer(text), key=lambda m: m.start()):
        start = match.start()
        if _negated(text.text, start) or _AVOIDED_EN.search(text.text[max(0, start - 50) : start]):
            continue
        return match.group(0)
    return None


def safety_risk(text: str) -> str | None:
    """The first safety word that is not negated (lowercased), or None."""
    return _safety_risk(scanned(text))


def group_words(text: str) -> str | None:
    """Words saying many consumers complain together (多人, 集体, many of us), or None."""
    match = _GROUP.search(scanned(text))
    return match.group(0) if match else None


def _builtin_category(text: Scanned) -> str:
    best, best_score = "other", 0
    for name, keywords in _CATEGORIES.items():
        hits = {m.group(0) for m in keywords.finditer(text)}
        if len(hits) > best_score:
            best, best_score = name, len(hits)
    return best


def builtin_category(text: str) -> str:
    """The category with the most distinct matching words; "other" when none matches."""
    return _builtin_category(scanned(text))


_BUILT_IN = ClassifyConfig()  # the nine categories, no renames


class Model(Protocol):
    """What classify asks of a learned model (handlers/textmodel.py): its best guesses."""

    def guess(self, text: str) -> tuple[tuple[str, float], tuple[str, float] | None]: ...


class Decision(NamedTuple):
    category: str
    priority: str
    model: str  # what the desk's model decided, e.g. "category 0.91" ("" when nothing)


def classify(
    text: str,
    rules: tuple[ClassifyRule, ...],
    *,
    desk: ClassifyConfig = _BUILT_IN,
    model: Model | None = None,
) -> tuple[str, str]:
    """(category, priority): the config's rules first (first match naming it), then the desk's
    model where it is confident, then the built-in rules. Safety and group words make a case
    urgent whatever the model says."""
    return decide(text, rules, desk=desk, model=model)[:2]


def decide(
    text: str,
    rules: tuple[ClassifyRule, ...],
    *,
    desk: ClassifyConfig = _BUILT_IN,
    model: Model | None = None,
) -> Decision:
    """classify(), saying what the model decided."""
    category: str | None = None
    priority: str | None = None
    by: list[str] = []
    for rule in rules:
        wanted = (category is None and rule.category) or (priority is None and rule.priority)
        if wanted and rule.match.search(text):
            category = category or rule.category
            priority = priority or rule.priority
    if category is None or priority is None:
        words = scanned(text)
        guess, priority_guess = model.guess(text) if model is not None else (None, None)
        if category is None:
            if guess and guess[1] >= desk.confidence and guess[0] in desk.categories:
                category = guess[0]
                by.append(f"category {guess[1]:.2f}")
            else:
                category = desk.desk_name(_builtin_category(words))
        if priority is None:
            if _safety_risk(words) or _GROUP.search(words):
                priority = "urgent"
            elif priority_guess and priority_guess[1] >= desk.priority_confidence(
                priority_guess[0]
            ):
                priority = priority_guess[0]
                by.append(f"priority {priority_guess[1]:.2f}")
            else:
                priority = "normal"
    return Decision(category, priority, ", ".join(by))


# -- out of scope (PROCEDURE §4) ---------------------------------------------------------------
# The built-in words suggesting each reason code of handlers/rejection.py, checked in this
# order (a case before a court is that, whatever else it is). A hint for staff, never applied.
_REJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (code, re.compile(pattern, re.IGNORECASE))
    for code, pattern in (
        (
            "court_or_arbitration",
            r"已(经)?(向[^，。,.]{0,12})?(起诉|提起诉讼|立案|申请(了)?仲裁|提起仲裁)"
            r"|法院已(经)?(受理|立案|判决|开庭)"
            r"|仲裁(委员会|委)?已(经)?(受理|立案|裁决)|正在(诉讼|仲裁|打官司)|诉讼中|仲裁中"
            r"|已经在打官司"
            r"|\b(already|have|has|had) (filed|brought|started|taken)\b[^.!?\n]{0,30}"
            r"\b(court|lawsuit|suit|claim|arbitration)\b"
            r"|\b(case|claim|dispute) is (now |currently )?(pending )?(before|in) (the )?(\w+ )?"
            r"(court|tribunal|arbitration)\b|\b(lawsuit|arbitration) (is )?(pending|under ?way"
            r"|ongoing)\b"
            r"|\bwe are in arbitration\b|\bcourt hearing (is|was) (scheduled|set)\b",
        ),
        (
            "b2b",
            r"经营者之间|购销纠纷|(我们|我|本)的?(公司|店|门店|饭店|餐厅|超市|工厂|厂).{0,8}(进货"
            r"|批发|采购|订货|订购)"
            r"|批发(商|给我们)|供货商|供应商.{0,8}(拖欠|纠纷|违约)|货款|我们是.{0,10}(经销商|零售商"
            r"|代理商)"
            r"|\bwholesale\b|\bb2b\b|\bfor resale\b|\bour (shop|store|company|restaurant|business) "
            r"(bought|ordered|purchased)\b|\bour supplier\b|\binvoice for our (company|business)\b",
        ),
        (
            "private_trade",
            r"个人私下交易|私下交易|闲鱼|转转|个人卖家|私人卖家|二手.{0,8}个人|个人.{0,8}二手"
            r"|朋友圈(里)?(买|购)"
            r"|微信(上)?私下|网友(手里|那里|那儿)买"
            r"|\bprivate (sale|seller|individual|trade)\b|\bfrom an individual\b"
            r"|\bfacebook marketplace\b"
            r"|\bcraigslist\b|\bgumtree\b|\bbetween individuals\b|\bsecond[- ]hand from (a|an) "
            r"(private|person|individual|stranger)\b",
        ),
        (
            "beyond_warranty",
            r"超(过|出)(了)?(保修|三包|质保)期?|过了(保修|三包|质保)期?|(保修|三包"
            r"|质保)期?已(经)?(过|结束|到期)"
            r"|(保修|质保)期外|已过保|过保了"
            r"|\bout of warranty\b|\bwarranty (has |had )?(expired|ended|run out|ran out|lapsed)\b"
            r"|\b(past|beyond|outside) (the |its )?warranty\b|\bno longer (under|covered by) "
            r"(the )?warranty\b",
        ),
        (
            "seconds",
            r"处理品|残次品|瑕疵品|次品|清仓(处理|品)|特价处理|(标注|注明|说明|写明"
            r"|告知)(了)?[^，。,.]{0,10}(瑕疵|处理|残次)"
            r"|\bsold as (seen|is)\b|\bas[- ]is\b|\bseconds\b|\bfactory seconds?\b"
            r"|\bex[- ]display\b"
            r"|\bclearance (item|sale|stock)\b|\bmarked as (damaged|defective|faulty)\b",
        ),
        (
            "no_respondent",
            r"不知道(是)?(哪|什么)(家|个)?(公司|商家|店)|找不到(商家|卖家|店家|公司)|(商家|店铺"
            r"|公司|卖家)已(经)?"
            r"(倒闭|注销|跑路|关门|消失|联系不上)|联系不上(商家|卖家|店家)"
            r"|\bdon'?t know (who|which (company|shop|seller|business))\b|\b(shop|store|seller"
            r"|company) "
            r"(has )?(closed down|disappeared|vanished|no longer exists)\b"
            r"|\bcan'?t find the (seller|shop)\b",
        ),
    )
)


def suggest_rejection(text: str, rules: tuple[ClassifyRule, ...]) -> str | None:
    """A reason the case may be out of scope (PROCEDURE §4), for staff to weigh; else None.

    The config's rules with a reject_reason come first and give their own text; the built-ins
    give a code of handlers/rejection.py (which words it for staff). A negated mention ("没有
    超过保修期", "not out of warranty") suggests nothing. Nothing is applied: staff decide.
    """
    for rule in rules:
        if rule.reject_reason and rule.match.search(text):
            return rule.reject_reason
    for code, pattern in _REJECTION_PATTERNS:
        for match in pattern.finditer(text):
            start = match.start()
            if not _negated(text, start, _NEGATION_ZH_IS) and not _CLAIMED_EN.search(
                text[max(0, start - 40) : start]
            ):
                return code
    return None


_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_CJK_RUN = re.compile(f"{CJK.pattern}+")


def detect_language(text: str, default: str) -> str:
    """zh-CN or en from the consumer's own words (a name or an order code does not decide)."""
    sample = text[:4000]
    cjk = sum(map(len, _CJK_RUN.findall(sample)))  # counted by runs: fewer matches to make
    words = len(_LATIN_WORD.findall(sample))
    if cjk >= 2 and cjk >= words:
        return "zh-CN"
    if words >= 3 and cjk < words:
        return "en"
    return default


class Classify:
    name = "classify"
    description = "language, category and priority of a message from the consumer's own words"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        if prep.automatic or prep.message is None:
            return
        if prep.words:  # a form row: its language came from the same words already
            text = prep.words
        else:
            text = f"{prep.message.subject}\n{prep.new_text or prep.message.text}"
            prep.language = detect_language(text, config.tickets.default_language)
        model = None
        path = config.data_dir / CLASSIFY_MODEL_FILE
        if config.classify.model == "auto" and path.exists():
            from handlers import textmodel  # numpy and scikit-learn: only for a desk with a model

            model = textmodel.current(path)
        decision = decide(text, config.rules, desk=config.classify, model=model)
        prep.category, prep.priority = decision.category, decision.priority
        if decision.model:
            prep.classified_by = f"model: {decision.model}"

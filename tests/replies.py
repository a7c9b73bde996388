"""What each client reply in tests/data/threads/ says once its quote and signature are cut."""

REPLIES = [
    (
        "gmail-reply-en.eml",
        "Hi,\n\nThe replacement blender arrived this morning and the jar is cracked again,\n"
        "same place as the first one. Photos attached. I'd like a refund now please.\n\n"
        "Thanks,\nEmily",
    ),
    (
        "gmail-reply-zh.eml",
        "您好，\n\n换货的电饭煲还是不加热，指示灯一直闪。请尽快安排退款。\n\n张伟",
    ),
    (
        "outlook-reply-en.eml",
        "Hello,\n\nI still have not received the refund of $129.00 you promised on Monday.\n"
        "Please check and let me know today.\n\n"
        "Regards,\nMichael Brown\nProcurement | Contoso Ltd.",
    ),
    (
        "outlook-reply-zh.eml",
        "你好，\n\n快递单号显示已签收，但我本人没有收到，小区门卫也说没有。请帮忙查一下。\n\n王芳",
    ),
    ("qq-mail-reply-zh.eml", "还是没有收到退款，已经过去一周了。麻烦尽快处理，谢谢！"),
    (
        "qq-mail-html-only-zh.eml",
        "快递员说包裹放在驿站了，但驿站查不到。\n  订单号：DD2026112200531",
    ),
    (
        "foxmail-reply-zh.eml",
        "你好，空调安装师傅今天没有按约定上门，电话也打不通。\n请给一个明确的上门时间。\n\n赵强",
    ),
    (
        "163-reply-zh.eml",
        "好的，那我等到周五。如果周五还没到就直接退款吧。\n"
        "2026-11-25 14:03:10 上传的照片在附件里。",
    ),
    ("126-mobile-reply-zh.eml", "收到，谢谢。周末在家，可以上门取件。"),
    (
        "apple-mail-reply-en.eml",
        "Yes, Thursday between 2 and 5 pm works. Please ask the courier to call first.",
    ),
    ("apple-mail-reply-zh.eml", "周四下午两点到五点都可以，麻烦快递员上门前先打电话。"),
    (
        "thunderbird-inline-reply-en.eml",
        "It is SN-4471-0932-XK.\n\n12 October 2026, from your online shop.",
    ),
]

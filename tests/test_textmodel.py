"""The desk's learned model: what it learns, how its file is kept, how intake uses it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from daemon import config as configmod
from daemon.settings import ClassifyConfig, ConfigError
from handlers import textmodel
from handlers.classify import classify

# GENERATED for this test (not real complaints): a desk whose complaints about phone plans the
# built-in rules cannot name, since "telecom" is the desk's own category.
PLANS = ["5G套餐", "宽带", "流量包", "月租套餐", "家庭宽带", "国际漫游"]
TELECOM = [
    "{p}被营业厅私自变更，话费单多出一项",
    "办理{p}后信号一直没有，营业厅不处理",
    "{p}到期后自动续约，没有短信通知我",
    "my {p} plan was switched without asking and the phone bill doubled",
]
PARCELS = [
    "快递三天了还没到，物流信息不更新 {p}",
    "the parcel never arrived and tracking stopped {p}",
]


def desk_texts() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for plan in PLANS:
        for template in TELECOM:
            texts.append(template.format(p=plan))
            labels.append("telecom")
        for template in PARCELS:
            texts.append(template.format(p=plan))
            labels.append("logistics")
    return texts, labels


def trained(tmp_path: Path) -> Path:
    texts, labels = desk_texts()
    model = textmodel.fit(texts, labels, [None] * len(texts), meta={"trained_at": "now"})
    path = tmp_path / textmodel.MODEL_FILE
    textmodel.save(model, path)
    return path


def test_a_saved_model_reads_back_and_names_the_desks_own_category(tmp_path: Path) -> None:
    model = textmodel.load(trained(tmp_path))
    guess, priority = model.guess("宽带被私自变更成了更贵的套餐")
    assert guess.value == "telecom" and guess.probability > 0.5
    assert priority is None  # no priority labels: the model has no opinion on them
    desk = ClassifyConfig(add=("telecom",))
    assert classify("宽带被私自变更成了更贵的套餐", (), desk=desk, model=model)[0] == "telecom"
    # without the model the rules cannot name it
    assert classify("宽带被私自变更成了更贵的套餐", (), desk=desk)[0] != "telecom"


def test_safety_rules_make_a_case_urgent_whatever_the_model_says(tmp_path: Path) -> None:
    model = textmodel.load(trained(tmp_path))
    desk = ClassifyConfig(add=("telecom",))
    category, priority = classify("路由器充电时冒烟起火，孩子被烫伤", (), desk=desk, model=model)
    assert priority == "urgent"


def test_an_unsure_model_leaves_the_category_to_the_rules(tmp_path: Path) -> None:
    model = textmodel.load(trained(tmp_path))
    sure = ClassifyConfig(add=("telecom",), confidence=1.0)  # never confident enough
    assert classify("电饭煲用了三天就坏了", (), desk=sure, model=model)[0] == "product_quality"


def test_a_model_of_another_format_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = trained(tmp_path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "version": 0, "caseloop": "0.0.9"}))
    old = tmp_path / "old-model.npz"
    with old.open("wb") as out:
        np.savez(out, **arrays)
    with pytest.raises(textmodel.ModelError) as refused:
        textmodel.load(old)
    assert "format 0" in str(refused.value) and "classify train" in str(refused.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a model", b"PK\x03\x04broken zip", b"\x80\x04\x95pickle"],
    ids=["empty", "text", "broken-zip", "pickle"],
)
def test_a_file_that_is_no_model_is_refused_never_a_crash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / textmodel.MODEL_FILE
    path.write_bytes(content)
    with pytest.raises(textmodel.ModelError, match="not a caseloop model file"):
        textmodel.load(path)


def test_intake_reads_the_model_again_when_it_changes_and_skips_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = trained(tmp_path)
    assert textmodel.current(path) is not None
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR, logger="caseloop.classify"):
        assert textmodel.current(path) is None
        assert textmodel.current(path) is None  # said once per version of the file
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "not a caseloop model file" in caplog.records[0].message


def test_the_config_renames_and_adds_categories(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[classify]\nadd = ["telecom"]\nrename = { logistics = "delivery" }\n'
        '[[rules]]\nmatch = "SIM"\ncategory = "telecom"\n'
        '[[staff]]\naddress = "d@example.com"\ngroups = ["d"]\n'
        '[[routing]]\ncategory = "delivery"\ngroup = "d"\n',
    )
    config = configmod.load(path)
    assert "delivery" in config.categories and "logistics" not in config.categories
    assert config.categories[-1] == "telecom"
    desk = config.classify
    assert classify("the parcel never arrived", config.rules, desk=desk)[0] == "delivery"
    assert classify("my SIM was cloned", config.rules, desk=desk)[0] == "telecom"


@pytest.mark.parametrize(
    "body, key",
    [
        ('[classify]\nrename = { shipping = "x" }\n', "classify.rename.shipping"),
        ('[classify]\nadd = ["Telecom Services"]\n', "classify.add"),
        ('[classify]\nadd = ["price"]\n', "classify.add"),
        ("[classify]\nconfidence = 1.5\n", "classify.confidence"),
        ("[classify]\nurgent_confidence = 0\n", "classify.urgent_confidence"),
        ('[[rules]]\nmatch = "x"\ncategory = "telecom"\n', "rules[0].category"),
    ],
)
def test_a_bad_category_setting_names_its_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        configmod.load(write_config(tmp_path, body))
    assert key in str(refused.value)

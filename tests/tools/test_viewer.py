"""tools/viewer.py headless (streamlit.testing.v1.AppTest): a tiny SpeaQ on the demo data shows its drawing, its
triplet table (filterable) and the JSON / CSV downloads; a wrong checkpoint shows one error."""

import os

import pytest

from sgg.data import DatasetCatalog
from tests.seeit_models import REPO, save_tiny_model, shared_datasets

apptest = pytest.importorskip("streamlit.testing.v1", reason="the viewer needs streamlit: pip install -e '.[app]'")

IMAGE_CFG, SGDET_CFG = "configs/quick/speaq_demo.yaml", "configs/quick/sttran_sgdet_demo.yaml"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGG_DATASETS", shared_datasets(tmp_path_factory))
        yield save_tiny_model(IMAGE_CFG, tmp_path_factory.mktemp("viewer") / "speaq")
        DatasetCatalog.reset_options()


def _app(weights, config_file=IMAGE_CFG):
    at = apptest.AppTest.from_file(os.path.join(REPO, "tools", "viewer.py"), default_timeout=120)
    at.run()
    at.text_input(key="config_path").input(os.path.join(REPO, config_file))
    at.text_input(key="weights_path").input(weights)
    return at.run()


def test_viewer_runs_a_model_on_demo_data(weights):
    at = _app(weights)
    assert not at.exception and not at.error
    assert "SpeaQ" in at.sidebar.success[0].value
    assert at.radio(key="source").value == "demo data"
    assert at.selectbox(key="example").value.startswith("demo_vg_test: ")
    at.slider(key="threshold").set_value(0.0)
    at.slider(key="topk").set_value(5)
    at.button(key="run").click()
    at.run()
    assert not at.exception and not at.error
    assert len(at.get("image")) == 1  # the drawing
    table = at.dataframe[0].value
    assert 1 <= len(table) <= 5 and {"subject", "predicate", "object", "score"} <= set(table.columns)
    assert table["score"].is_monotonic_decreasing
    assert at.caption[-1].value == f"{len(table)} of {len(table)} triplets"
    # Filters: one predicate, then a score above every triplet's.
    predicate = table["predicate"].iloc[0]
    at.multiselect(key="filter_predicate").select(predicate)
    at.run()
    assert set(at.dataframe[0].value["predicate"]) == {predicate}
    at.slider(key="filter_score").set_value(1.0)
    at.run()
    assert len(at.dataframe[0].value) == 0
    assert len(at.get("download_button")) == 2


def test_viewer_reports_a_checkpoint_of_another_model(weights):
    at = _app(weights, SGDET_CFG)
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("error: ") and "trained as SpeaQ" in at.error[0].value

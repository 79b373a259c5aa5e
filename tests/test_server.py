"""The pack inside the real ComfyUI server process, over HTTP on loopback."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.host

OUR_NODES = {"StackedIDLoader", "StackedIDFaceAnalysisLoader", "StackedIDEncode", "StackedIDStack",
             "StackedIDSave", "StackedIDLoad", "StackedIDApply", "StackedIDStyle",
             "StackedIDFaceSimilarity", "StackedIDApplyBatch"}
OUR_TYPES = {"STACKEDID_ENCODER", "STACKEDID_FACE_ANALYSIS", "STACKEDID_IDENTITY"}


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory):
    """Real server; its base folder holds tiny PhotoMaker files, the fake buffalo_l pack and photos."""
    from synthetic import fake_insightface
    from support.server import ComfyServer
    from support.tiny_models import write_tiny_models

    base = tmp_path_factory.mktemp("server")
    write_tiny_models(base / "models")
    (base / "input").mkdir()
    for name, img in {"face_red.png": fake_insightface.synthetic_face(),
                      "noface.png": fake_insightface.blank_image()}.items():
        fake_insightface.save_png(img, base / "input" / name)
    srv = ComfyServer(base=base).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_all_nodes_in_object_info_with_one_category(object_info, server):
    assert OUR_NODES <= set(object_info), server.log()[-2000:]
    assert {object_info[n]["category"] for n in OUR_NODES} == {"photomaker"}
    # core's PhotoMaker nodes still present and untouched
    assert object_info["PhotoMakerLoader"]["python_module"].startswith("comfy_extras")
    assert "IMPORT FAILED" not in "\n".join(
        line for line in server.log().splitlines() if "photomaker-stackedid" in line)


def test_socket_types_are_ours_and_do_not_clash(object_info):
    used = set()
    for name in OUR_NODES:
        info = object_info[name]
        used |= set(info["output"])
        for section in ("required", "optional"):
            for spec in info["input"].get(section, {}).values():
                if isinstance(spec[0], str):
                    used.add(spec[0])
    custom = {t for t in used if t.startswith("STACKEDID_")}
    assert custom == OUR_TYPES
    core_types = set()
    for name, info in object_info.items():
        if name not in OUR_NODES:
            core_types |= set(info["output"])
    assert not (OUR_TYPES & core_types)


def test_every_input_and_output_has_a_tooltip(object_info):
    for name in OUR_NODES:
        info = object_info[name]
        for section in ("required", "optional"):
            for inp, spec in info["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
        tips = info.get("output_tooltips") or []
        assert len(tips) == len(info["output"]) and all(tips), f"{name} outputs lack tooltips"
        assert info.get("description"), f"{name} has no description"


def test_errors_reach_the_user_and_the_server_keeps_serving(server):
    from support.graphs import graph

    missing_file = graph("v1", extra={"2": {"inputs": {"photomaker_file": "missing.bin"}}})
    status, body = server.post("/prompt", {"prompt": missing_file, "client_id": "pm-test"})
    if status == 400:  # rejected by the host's combo validation
        assert "2" in body.get("node_errors", {})
    else:  # or refused by the node itself, naming the input and the folder
        err = _execution_error(server.wait(body["prompt_id"]))
        assert err["node_type"] == "StackedIDLoader" and "'photomaker_file'" in err["exception_message"]
        assert "models/photomaker" in err["exception_message"]

    no_trigger = server.wait(server.queue(graph("v1", text="a photo of a man")))
    assert no_trigger["status"]["status_str"] == "error"
    err = _execution_error(no_trigger)
    assert err["node_type"] == "StackedIDApply" and "trigger" in err["exception_message"]
    no_face = server.wait(server.queue(graph("v2", image="noface.png")))
    err = _execution_error(no_face)
    assert err["node_type"] == "StackedIDEncode" and "no face found in image 1 of" in err["exception_message"]

    for version in ("v1", "v2"):
        ok = server.wait(server.queue(graph(version)))
        assert ok["status"]["status_str"] == "success", ok["status"]
        assert ok["outputs"]["11"]["images"][0]["filename"].endswith(".png")


def _execution_error(history_entry) -> dict:
    assert history_entry["status"]["status_str"] == "error"
    return [m for m in history_entry["status"]["messages"] if m[0] == "execution_error"][0][1]

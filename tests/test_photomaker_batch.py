"""scripts/photomaker_batch.py against real ComfyUI servers (main.py, own processes, loopback) with
the pack, the tiny SDXL set and the fake InsightFace models (tests/support/batch_env.py).

The command runs as a user runs it (a subprocess); what the servers really ran is read back from
their /history, so a manifest that claims a prompt, seed or person the server never saw fails.
Jobs are 64x64 with 2 sampler steps (the interruption tests use a few more steps so that a job is
still running when the server or the client is stopped)."""
from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import pytest
from support import batch_env, workflow_env

pytestmark = pytest.mark.host

WORKFLOWS = workflow_env.REPO / "workflows"
RANK_SEEDS = WORKFLOWS / "06-photomaker-rank-seeds.json"  # Encode + Apply + KSampler + Face Similarity
PROMPTS = ["a photo of a man img", "a photo of a man img, smiling", "portrait of a man img, studio light"]
PEOPLE = {"alice": ["RED"], "bob": ["GREEN", "GREEN"]}  # bob: two photos (batched on the server)
SMALL = [*batch_env.SMALL, "Empty Latent Image.batch_size=1"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = []
    try:
        for name in ("a", "b"):
            started.append(batch_env.start_server(tmp_path_factory.mktemp(f"batch-server-{name}")))
        yield started
    finally:
        for srv in started:
            srv.cleanup()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-inputs")
    people = batch_env.write_people(root / "people", PEOPLE)
    prompts = root / "prompts.txt"
    prompts.write_text("# one per line\n" + "\n".join(PROMPTS) + "\n\n")
    return {"people": people, "prompts": prompts, "root": root}


def _args(servers, out, people, prompts, *extra, workflow=RANK_SEEDS, seeds="2", sets=SMALL):
    args = ["--workflow", workflow, "--people", people, "--prompts", prompts, "--seeds", seeds, "--out", out]
    for srv in servers:
        args += ["--server", srv if isinstance(srv, str) else srv.url]
    for s in sets:
        args += ["--set", s]
    return [*args, *extra]


def _records(out: Path) -> list[dict]:
    path = Path(out) / "manifest.jsonl"
    return ([json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.exists() else [])


def _ran(server, prompt_id: str) -> dict:
    """What the server really executed for prompt_id: {class_type: [inputs, ...]}."""
    entry = server.get(f"/history/{prompt_id}")[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]
    nodes = {}
    for node in entry["prompt"][2].values():
        nodes.setdefault(node["class_type"], []).append(node["inputs"])
    return nodes


def _history_size(servers) -> int:
    return sum(len(s.get("/history")) for s in servers)


def _idle(servers, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(not (q := s.get("/queue"))["queue_running"] and not q["queue_pending"] for s in servers):
            return
        time.sleep(0.2)
    raise TimeoutError("servers still busy")


def _check_done_exactly_once(records: list[dict], people, prompts, seeds) -> dict[str, dict]:
    done = [r for r in records if r["status"] == "done"]
    keys = [r["key"] for r in done]
    assert len(keys) == len(set(keys)), "a job was recorded as done twice"
    assert sorted((r["person"], r["prompt"], r["seed"]) for r in done) == \
        sorted(itertools.product(people, prompts, seeds))
    return {r["key"]: r for r in done}


# ------------------------------------------------------------------------------------ full run

@pytest.fixture(scope="module")
def full_run(servers, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-out")
    t0 = time.time()
    res = batch_env.run_batch(*_args(servers, out, inputs["people"], inputs["prompts"]))
    print(f"\nbatch of 12 on two servers: {time.time() - t0:.1f} s\n{res.stderr[-1500:]}")
    assert res.returncode == 0, res.stderr[-4000:]
    return out, _records(out), res


def test_two_servers_run_every_job_once_with_a_correct_manifest(full_run, servers):
    from PIL import Image

    out, records, res = full_run
    assert len(records) == 12
    _check_done_exactly_once(records, PEOPLE, PROMPTS, [0, 1])
    by_url = {s.url: s for s in servers}
    assert {r["server"] for r in records} == set(by_url), "both servers got work"
    for rec in records:
        assert rec["attempts"] == 1 and rec["error"] is None and rec["seconds"] > 0
        ran = _ran(by_url[rec["server"]], rec["prompt_id"])
        assert [n["seed"] for n in ran["KSampler"]] == [rec["seed"]]
        assert [n["text"] for n in ran["StackedIDApply"]] == [rec["prompt"]]
        photos = [n["image"] for n in ran["LoadImage"]]
        assert len(photos) == len(PEOPLE[rec["person"]]) and all(f"-{rec['person']}-" in p for p in photos)
        assert [n["steps"] for n in ran["KSampler"]] == [2]  # the --set overrides reached the server
        assert len(rec["outputs"]) == 1
        with Image.open(out / rec["outputs"][0]) as im:
            assert im.size == (64, 64)
        # Face Sim. from the workflow's Face Similarity node: one image per job, score in [-1, 1]
        assert len(rec["scores"]) == 1 and rec["score"] == rec["scores"][0] and -1.0 <= rec["score"] <= 1.0
    assert "totals: 12/12 done (12 this run, 0 skipped" in res.stderr


def test_rerun_of_a_finished_batch_queues_nothing(full_run, servers, inputs):
    out, records, _ = full_run
    before = _history_size(servers)
    res = batch_env.run_batch(*_args(servers, out, inputs["people"], inputs["prompts"]))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "12 already done, 0 to run" in res.stderr
    assert _records(out) == records and _history_size(servers) == before


def test_contact_sheet_in_the_browser(full_run):
    from support import browser

    browser.require_playwright()
    from playwright.sync_api import sync_playwright

    out, records, _ = full_run
    sheet = out / "contact_sheet.html"
    assert not re.search(r"""(src|href)=["'](?!data:)""", sheet.read_text()), "external asset in the sheet"
    with sync_playwright() as pw:
        chromium = browser.launch(pw)
        try:
            page = chromium.new_page()
            page.goto(sheet.as_uri())
            shown = page.evaluate("""() => [...document.querySelectorAll('figure')].map(f => ({
                person: f.closest('section').dataset.person, key: f.dataset.key,
                images: [...f.querySelectorAll('img')].map(i => ({
                    file: i.dataset.file, w: i.naturalWidth, visible: i.getBoundingClientRect().width > 0})),
                caption: f.querySelector('figcaption').innerText}))""")
        finally:
            chromium.close()
    assert len(shown) == len(records)
    by_key = {r["key"]: r for r in records}
    for fig in shown:
        rec = by_key[fig["key"]]
        assert fig["person"] == rec["person"]
        assert [i["file"] for i in fig["images"]] == rec["outputs"]
        assert all(i["w"] == 64 and i["visible"] for i in fig["images"]), fig
        assert rec["prompt"] in fig["caption"] and f"seed {rec['seed']}" in fig["caption"]
        assert f"Face Sim. {rec['score']:.3f}" in fig["caption"]


# ------------------------------------------------------------------------------- interruptions

def _wait_for(predicate, proc, timeout: float = 180, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"the batch ended before {what}"
        time.sleep(0.05)
    raise TimeoutError(what)


def test_a_server_stopped_mid_run_has_its_jobs_finished_by_the_other(servers, inputs, tmp_path):
    third = batch_env.start_server(tmp_path / "server-c")
    out, log = tmp_path / "out", tmp_path / "batch.log"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    sets = [*SMALL[:2], "KSampler.steps=12", SMALL[3]]
    try:
        proc = batch_env.start_batch(*_args([servers[0], third], out, inputs["people"], prompts,
                                            "--server-timeout", "3", sets=sets), log=log)

        def third_busy_after_a_result():  # stop it while it runs a job, after it finished one
            return (any(r["server"] == third.url for r in _records(out))
                    and third.get("/queue")["queue_running"])

        _wait_for(third_busy_after_a_result, proc, what="server c ran a job")
        third.stop()
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        third.cleanup()
    text = log.read_text()
    moved = re.search(r"stopped answering: (\d+) job\(s\) queued again", text)
    assert moved and int(moved.group(1)) >= 1, text[-3000:]
    records = _records(out)
    assert len(records) == 12
    done = _check_done_exactly_once(records, PEOPLE, PROMPTS, [0, 1])
    servers_used = {r["server"] for r in done.values()}
    assert servers_used == {servers[0].url, third.url}
    assert sum(r["attempts"] == 2 and r["server"] == servers[0].url for r in records) >= int(moved.group(1))


def test_an_interrupted_client_resumes_with_only_the_unfinished_jobs(servers, inputs, tmp_path):
    out, log = tmp_path / "out", tmp_path / "batch.log"
    sets = [*SMALL[:2], "KSampler.steps=8", SMALL[3]]
    args = _args(servers, out, inputs["people"], inputs["prompts"], sets=sets)
    proc = batch_env.start_batch(*args, log=log)
    _wait_for(lambda: len(_records(out)) >= 3, proc, what="three jobs finished")
    proc.kill()  # SIGKILL: no clean-up, as a closed laptop or a crash
    proc.wait()
    first = _records(out)
    assert 3 <= len(first) < 12, "kill came too late to test anything"
    _idle(servers)  # the killed client's queued prompts still finish on the servers, unrecorded
    before = _history_size(servers)
    res = batch_env.run_batch(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{len(first)} already done, {12 - len(first)} to run" in res.stderr
    records = _records(out)
    second = records[len(first):]
    assert {r["run"] for r in second}.isdisjoint({r["run"] for r in first})
    assert not {r["key"] for r in first} & {r["key"] for r in second}, "a finished job ran again"
    _check_done_exactly_once(records, PEOPLE, PROMPTS, [0, 1])
    assert _history_size(servers) - before == 12 - len(first), \
        "the re-run queued more than the unfinished jobs"


# ---------------------------------------------------------------------------------- other paths

def test_saved_identity_people_are_copied_for_load_identity(servers, tmp_path):
    server = servers[0]
    people = tmp_path / "people"
    workflow_env.write_identity(people / "carol.safetensors", version="v2", seed=3)
    wf = json.loads((WORKFLOWS / "05-photomaker-save-identity.json").read_text())
    for node in wf["nodes"]:  # step 2 of that workflow: group 2 on, group 1 muted
        if node["type"] not in ("Note", "MarkdownNote"):
            node["mode"] = 0 if node.get("mode") == 2 else 2
    workflow = tmp_path / "reuse-identity.json"
    workflow.write_text(json.dumps(wf))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a woman img as an astronaut\n")
    res = batch_env.run_batch(*_args([server], tmp_path / "out", people, prompts, workflow=workflow,
                                     seeds="1", sets=batch_env.SMALL))
    assert res.returncode == 0, res.stderr[-3000:]
    (rec,) = _records(tmp_path / "out")
    assert rec["status"] == "done" and rec["person"] == "carol" and rec["seed"] == 0 and rec["score"] is None
    ran = _ran(server, rec["prompt_id"])
    (load,) = ran["StackedIDLoad"]
    assert load["identity_file"].startswith("pmbatch-carol-")
    copied = server.base / "models" / "photomaker_identities" / load["identity_file"]
    assert copied.read_bytes() == (people / "carol.safetensors").read_bytes()


def test_a_failing_job_is_retried_then_recorded_with_the_servers_error(servers, tmp_path):
    people = batch_env.write_people(tmp_path / "people", {"noface": ["NOFACE"]})
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0])
    out = tmp_path / "out"
    res = batch_env.run_batch(*_args(servers, out, people, prompts, "--retries", "1", seeds="1"))
    assert res.returncode == 1, res.stderr[-3000:]
    (rec,) = _records(out)
    assert rec["status"] == "failed" and rec["attempts"] == 2 and rec["outputs"] == []
    assert rec["error"].startswith("StackedIDEncode") and "no face found in image 1 of" in rec["error"]
    assert len(rec["errors"]) == 2
    assert "failed" in (out / "contact_sheet.html").read_text()
    assert "0/1 done" in res.stderr and "1 failed" in res.stderr


# ---------------------------------------------------------------------------------- validation

PLAIN_SDXL = {  # a text-to-image graph without any PhotoMaker node (API format)
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo of a man"}},
    "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "4": {"class_type": "KSampler",
          "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                     "latent_image": ["3", 0], "seed": 1, "steps": 2, "cfg": 5.0,
                     "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "plain"}},
}


def _bad_inputs(case: str, tmp: Path, inputs: dict) -> tuple[dict, list[str]]:
    """(changed _args keywords, extra args) for a validation case."""
    if case == "unknown widget":
        return {"sets": ["KSampler.stepz=3"]}, []
    if case == "unknown node":
        return {"sets": ["Sampler That Is Not There.steps=3"]}, []
    if case == "missing people folder":
        return {"people": tmp / "nobody"}, []
    if case == "empty person folder":
        (tmp / "people" / "dave").mkdir(parents=True)
        return {"people": tmp / "people"}, []
    if case == "unreadable photo":
        batch_env.write_people(tmp / "people", {"erin": ["RED"]})
        (tmp / "people" / "erin" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        return {"people": tmp / "people"}, []
    if case == "no PhotoMaker node":
        (tmp / "plain.json").write_text(json.dumps(PLAIN_SDXL))
        return {"workflow": tmp / "plain.json"}, []
    if case == "identity without Load Identity":
        workflow_env.write_identity(tmp / "people" / "frank.safetensors")
        return {"people": tmp / "people"}, []
    if case == "prompt without trigger":
        (tmp / "prompts.txt").write_text("a photo of a man img\na photo of a man\n")
        return {"prompts": tmp / "prompts.txt"}, []
    if case == "unreachable server":
        from support.server import free_port

        return {"extra_server": f"http://127.0.0.1:{free_port()}"}, []
    raise AssertionError(case)


VALIDATION = {
    "unknown widget": ["--set KSampler.stepz=3", "no widget 'stepz'", "steps"],
    "unknown node": ["no node titled or typed 'Sampler That Is Not There'", "KSampler"],
    "missing people folder": ["--people", "no such folder"],
    "empty person folder": ["dave", "has no photos"],
    "unreadable photo": ["broken.png", "is not a readable image"],
    "no PhotoMaker node": ["--workflow", "no PhotoMaker Apply node"],
    "identity without Load Identity": ["--people", "no PhotoMaker Load Identity node"],
    "prompt without trigger": ["prompt 2", "lacks the trigger word 'img'"],
    "unreachable server": ["--server http://127.0.0.1:", "unreachable", "Start ComfyUI"],
}


@pytest.mark.parametrize("case", list(VALIDATION))
def test_bad_input_is_refused_before_anything_is_queued(case, servers, inputs, tmp_path):
    changes, extra = _bad_inputs(case, tmp_path, inputs)
    kw = {"people": inputs["people"], "prompts": inputs["prompts"]}
    kw.update({k: v for k, v in changes.items() if k in ("people", "prompts")})
    urls = [*servers, *([changes["extra_server"]] if "extra_server" in changes else [])]
    opts = {k: v for k, v in changes.items() if k in ("workflow", "sets")}
    before = _history_size(servers)
    res = batch_env.run_batch(*_args(urls, tmp_path / "out", kw["people"], kw["prompts"], *extra, **opts))
    assert res.returncode == 2, res.stderr[-3000:]
    for part in VALIDATION[case]:
        assert part in res.stderr, f"{part!r} not in: {res.stderr}"
    assert _history_size(servers) == before
    assert all(not s.get("/queue")["queue_pending"] and not s.get("/queue")["queue_running"] for s in servers)
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


# ------------------------------------------------------------------------------ prompt binding

@pytest.mark.parametrize("name, holder", [
    ("01-photomaker-v2-basic.json", ("StackedIDApply", "text")),
    ("04-photomaker-stylization.json", ("StackedIDStyle", "positive")),
    ("09-photomaker-controlnet.json", ("PrimitiveStringMultiline", "value"))])
def test_the_prompt_goes_where_the_apply_node_reads_it(servers, name, holder):
    """A linked Apply text is followed upstream (Style's positive, a text primitive through String
    Replace); the job's photos replace the workflow's, whose loaders are left out of the prompt."""
    import sys

    sys.path.insert(0, str(workflow_env.REPO / "scripts"))
    try:
        from batch import workflow
    finally:
        sys.path.remove(str(workflow_env.REPO / "scripts"))
    object_info = servers[0].get("/object_info")
    api = workflow.to_api(json.loads((WORKFLOWS / name).read_text()), object_info, "test")
    template = workflow.analyse(api, object_info, {"photos"}, 2)
    job = workflow.bind(template, "a photo of a man img at sea", 7, photos=["p0.png", "p1.png"])
    ((nid, key),) = template.prompt_targets
    assert ((job[nid]["class_type"], key) == holder
            and job[nid]["inputs"][key] == "a photo of a man img at sea")
    assert [n["inputs"]["seed"] for n in job.values() if n["class_type"] == "KSampler"] == [7]
    loads = sorted(n["inputs"]["image"] for n in job.values() if n["class_type"] == "LoadImage")
    assert loads[:2] == ["p0.png", "p1.png"] and all(img in ("p0.png", "p1.png", "photomaker_pose.png")
                                                     for img in loads)
    (encode,) = [n for n in job.values() if n["class_type"] == "StackedIDEncode"]
    assert job[encode["inputs"]["images"][0]]["class_type"] == "ImageBatch"

"""prefect.yaml's build and pull steps: the code's folder, or a cached clone of a commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.deployed_code import CODE_REPO_ENV, checkout, pull_code, record_code
from flows.errors import CodeError
from tests.conftest import REPO
from tests.factories import commit_to_bare_repo, git
from tests.prefect_stack import free_port


@pytest.fixture
def remote(tmp_path: Path) -> tuple[str, str]:
    """(file:// URL of a bare repository, its commit) holding a.txt and a `flows` package."""
    source = tmp_path / "source"
    (source / "flows").mkdir(parents=True)
    (source / "a.txt").write_text("the deployed commit\n")
    (source / "flows" / "__init__.py").write_text('ORIGIN = "the deployed commit"\n')
    commit = commit_to_bare_repo(source, tmp_path / "t2v.git")
    return (tmp_path / "t2v.git").as_uri(), commit


def test_a_commit_is_cloned_once_then_reused(remote: tuple[str, str], tmp_path: Path) -> None:
    url, commit = remote
    cache = tmp_path / "cache"
    first = checkout(url, commit, cache)
    assert first == cache / commit
    assert (first / "a.txt").read_text() == "the deployed commit\n"
    assert git(first, "rev-parse", "HEAD") == commit

    # With the repository gone, only the cached checkout can answer.
    shutil.rmtree(tmp_path / "t2v.git")
    assert checkout(url, commit, cache) == first
    assert sorted(path.name for path in cache.iterdir()) == [commit]


def test_concurrent_fetches_of_one_commit_leave_one_whole_checkout(
    remote: tuple[str, str], tmp_path: Path
) -> None:
    url, commit = remote
    cache = tmp_path / "cache"
    runs = 4
    start = threading.Barrier(runs)

    def fetch(_: int) -> Path:
        start.wait()
        return checkout(url, commit, cache)

    with ThreadPoolExecutor(runs) as pool:
        results = set(pool.map(fetch, range(runs)))
    assert results == {cache / commit}
    # No clone left half-way or in a temporary folder, and nothing changed in the checkout.
    assert sorted(path.name for path in cache.iterdir()) == [commit]
    assert git(cache / commit, "status", "--porcelain") == ""
    assert git(cache / commit, "rev-parse", "HEAD") == commit


def test_a_bad_repository_is_one_line_naming_it(remote: tuple[str, str], tmp_path: Path) -> None:
    _, commit = remote
    missing = (tmp_path / "no-such.git").as_uri()
    with pytest.raises(CodeError) as error:
        checkout(missing, commit, tmp_path / "cache")
    assert str(error.value).startswith(f"cannot clone {missing}: fatal: ")
    assert "\n" not in str(error.value)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == []

    # A token in the URL is not repeated.
    address = f"127.0.0.1:{free_port()}/team/t2v.git"
    with pytest.raises(CodeError) as error:
        checkout(f"http://deploy:tok3n-s3cret@{address}", commit, tmp_path / "cache")
    assert str(error.value).startswith(f"cannot clone http://***@{address}: fatal: ")
    assert "tok3n-s3cret" not in str(error.value)


@pytest.mark.usefixtures("prefect_api_url")
def test_a_pull_step_that_cannot_fetch_the_code_crashes_its_run_with_the_cause(
    remote: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow, get_client

    _, commit = remote
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(flow(name="pulled")(lambda: None))
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(run.id))  # as a worker starts a run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    moved = (tmp_path / "moved.git").as_uri()
    with pytest.raises(CodeError) as error:
        pull_code("/unused", repository=moved, commit=commit)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    # The worker only says "Process exited with a general error"; a parent shows this.
    assert state is not None and state.is_crashed()
    assert state.message == str(error.value)
    assert state.message.startswith(f"cannot clone {moved}: fatal: ")


def test_a_commit_the_repository_lacks_is_named(remote: tuple[str, str], tmp_path: Path) -> None:
    url, _ = remote
    unpushed = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CodeError, match=rf"^commit {unpushed} is not in {url} \(push it"):
        checkout(url, unpushed, tmp_path / "cache")
    with pytest.raises(CodeError, match=rf"^commit 'main' of {url} is not a full git hash$"):
        checkout(url, "main", tmp_path / "cache")


def test_without_a_repository_the_build_step_records_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CODE_REPO_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # not a git repository, as tests/prefect_stack.py's copies
    assert record_code() == {"directory": str(tmp_path), "repository": "", "commit": ""}


def test_with_a_repository_the_build_step_records_the_commit(
    remote: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, commit = remote
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", url, str(clone))
    monkeypatch.chdir(clone)
    expected = {"directory": str(clone), "repository": url, "commit": commit}
    for configured in ("origin", url):  # a remote's name stands for its URL
        monkeypatch.setenv(CODE_REPO_ENV, configured)
        assert record_code() == expected

    (clone / "a.txt").write_text("not committed\n")
    with pytest.raises(CodeError) as error:
        record_code()
    assert str(error.value) == (
        f"T2V_CODE_REPO={url} deploys a commit, but {clone} has 1 uncommitted change(s) "
        "(first: M a.txt): commit and push them, or deploy without T2V_CODE_REPO to run "
        "this folder as it is"
    )


def test_the_pull_step_makes_the_flow_import_the_project_from_the_checkout(
    remote: tuple[str, str], tmp_path: Path
) -> None:
    url, commit = remote
    # In a process of its own, as a flow run's: the step forgets the `flows` it came from.
    script = (
        "import json, os, sys\n"
        "from flows.deployed_code import pull_code\n"
        f"step = pull_code(directory='/unused', repository={url!r}, commit={commit!r})\n"
        "sys.path.insert(0, os.getcwd())  # as Prefect does before importing the entrypoint\n"
        "import flows\n"
        "print(json.dumps([step, os.getcwd(), flows.ORIGIN]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    checkout_folder = str(tmp_path / "xdg" / "t2v" / "code" / commit)
    assert json.loads(done.stdout) == [
        {"directory": checkout_folder},
        checkout_folder,
        "the deployed commit",
    ]


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("name", ["destination", "manifest", "image_root"])
def test_a_run_of_a_cloned_commit_refuses_a_relative_path_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from flows.render_flow import render_manifest

    clone = tmp_path / "xdg" / "t2v" / "code" / ("c0" * 20)  # where the pull step goes
    clone.mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(clone)
    manifest = tmp_path / "m.csv"
    manifest.write_text("prompt,num_frames,height,width,num_inference_steps\na boat,1,64,64,1\n")
    paths = {"manifest": str(manifest), "destination": str(tmp_path / "out"), "image_root": None}
    paths[name] = "relative/here"
    state = render_manifest(**paths, model="tiny-random", return_state=True)
    assert state.is_failed()
    assert state.message.endswith(
        f"CodeError: {name} 'relative/here' is a relative path, and this run's code is commit "
        f"{clone.name} cloned in {clone.parent}, where it would resolve: give an absolute path "
        "(a folder every worker sees) or an s3:// URI"
    )
    assert list(clone.iterdir()) == [] and not (tmp_path / "out").exists()

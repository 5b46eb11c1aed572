"""What `make deploy CODE_REPO=…` refuses before any deployment exists: a credential in the
URL workers would clone, and a commit those workers could not fetch."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.deployed_code import CODE_REPO_ENV, record_code
from flows.errors import CodeError
from tests.factories import commit_to_bare_repo, git


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, str]:
    """A clone of a bare repository, as the current folder: (clone, remote URL, commit)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("the deployed commit\n")
    commit = commit_to_bare_repo(source, tmp_path / "t2v.git")
    url = (tmp_path / "t2v.git").as_uri()
    folder = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", url, str(folder))
    monkeypatch.chdir(folder)
    return folder, url, commit


@pytest.mark.parametrize(
    "url",
    [
        "https://deploy:tok3n-s3cret@git.example.com/team/t2v.git",
        "https://tok3n-s3cret@git.example.com/team/t2v.git",
        "ssh://deploy:tok3n-s3cret@git.example.com/team/t2v.git",
    ],
)
def test_a_credential_in_the_url_is_refused_and_never_repeated(
    url: str, clone: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _, _ = clone
    for configured in (url, "origin"):  # also through a remote whose URL holds one
        git(folder, "remote", "set-url", "origin", url)
        monkeypatch.setenv(CODE_REPO_ENV, configured)
        with pytest.raises(CodeError) as error:
            record_code()
        message = str(error.value)
        assert "tok3n-s3cret" not in message
        assert "credential" in message and "\n" not in message
        assert "credential helper" in message


def test_a_user_name_alone_in_an_ssh_url_is_no_credential(
    clone: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url, commit = clone
    # git@host:path and ssh://git@host/path name an account; the key stays in ~/.ssh. The
    # commit check then reaches the repository by its path.
    git(folder, "remote", "set-url", "origin", url)
    monkeypatch.setenv(CODE_REPO_ENV, "origin")
    assert record_code()["commit"] == commit


def test_a_commit_the_workers_cannot_fetch_is_refused_at_deploy(
    clone: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url, _ = clone
    (folder / "b.txt").write_text("committed here, never pushed\n")
    git(folder, "add", "b.txt")
    git(folder, "commit", "--quiet", "-m", "local only")
    local = git(folder, "rev-parse", "HEAD")
    monkeypatch.setenv(CODE_REPO_ENV, "origin")
    with pytest.raises(CodeError) as error:
        record_code()
    assert str(error.value) == (
        f"commit {local} is not in {url}, where workers fetch it: push it, then deploy again"
    )
    git(folder, "push", "--quiet", "origin", "HEAD")
    assert record_code()["commit"] == local


def test_a_repository_that_does_not_exist_is_refused_at_deploy(
    clone: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = (tmp_path / "no-such.git").as_uri()
    monkeypatch.setenv(CODE_REPO_ENV, missing)
    with pytest.raises(CodeError, match=rf"^cannot reach {missing} as workers would: fatal: "):
        record_code()


def test_untracked_files_do_not_block_a_deploy(
    clone: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _, commit = clone
    (folder / "out").mkdir()
    (folder / "out" / "results.csv").write_text("id\n")  # a render's output, not code
    monkeypatch.setenv(CODE_REPO_ENV, "origin")
    assert record_code()["commit"] == commit

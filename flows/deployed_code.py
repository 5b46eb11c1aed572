"""Where a deployment's flow runs find their code: prefect.yaml's build step records it when
`prefect deploy` runs, its pull step goes there when a worker starts a run.

Two modes. Without `T2V_CODE_REPO`, the folder `prefect deploy` ran in (one machine, or the
project at one path everywhere). With it, a commit of that git repository, which each worker
machine clones once into its cache and every later run of that commit reuses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from uuid import UUID

from flows.errors import CodeError
from tasks.errors import T2VError
from tasks.settings import settings

CODE_REPO_ENV = "T2V_CODE_REPO"  # tasks/settings.py reads it
# The project's own packages: a flow run must import them from its code's folder.
PROJECT_PACKAGES = frozenset({"flows", "tasks", "storage"})
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
USERINFO = re.compile(r"(?<=://)[^/@]+@")


def record_code() -> dict[str, str]:
    """Build step. Without T2V_CODE_REPO: this folder. With it (a URL, or the name of one of
    this clone's git remotes, such as `origin`): that URL and HEAD's commit, refusing
    uncommitted changes, which a clone of the commit would not have."""
    directory = os.getcwd()
    repository = settings().code_repo
    if not repository:
        return {"directory": directory, "repository": "", "commit": ""}
    if repository in _git(["remote"], f"cannot list the git remotes of {directory}").split():
        repository = _git(
            ["remote", "get-url", repository], f"cannot read git remote {repository!r}"
        )
    _refuse_credentials(repository)
    # Only tracked files are code: an output folder or a scratch file is not deployed anyway.
    changes = _git(
        ["status", "--porcelain", "--untracked-files=no"], f"cannot read the state of {directory}"
    ).splitlines()
    if changes:
        raise CodeError(
            f"{CODE_REPO_ENV}={_shown(repository)} deploys a commit, but {directory} has "
            f"{len(changes)} uncommitted change(s) (first: {changes[0].strip()}): commit and "
            f"push them, or deploy without {CODE_REPO_ENV} to run this folder as it is"
        )
    commit = _git(["rev-parse", "HEAD"], f"cannot read the commit of {directory}")
    _check_fetchable(repository, commit)
    return {"directory": directory, "repository": repository, "commit": commit}


def _refuse_credentials(repository: str) -> None:
    """A deployment's pull step is readable by everyone who can read deployments, and a
    failed clone prints its URL in the worker's log: no password or token may be in it.
    An ssh account name (`git@host:…`, `ssh://git@host/…`) is no credential."""
    scheme, _, rest = repository.partition("://")
    userinfo = rest.split("/", 1)[0].rpartition("@")[0] if rest else ""
    if userinfo and (":" in userinfo or scheme.lower() in ("http", "https")):
        raise CodeError(
            f"{CODE_REPO_ENV}={_shown(repository)} holds a credential, which every deployment "
            "would store in clear: give the URL without it and let git find it on each worker "
            "(a git credential helper, or an ssh key)"
        )


def _check_fetchable(repository: str, commit: str) -> None:
    """Workers clone `repository` and check out `commit`: it must be reachable from one of
    that repository's refs, as `git ls-remote` lists them from here."""
    shown = _shown(repository)
    listing = _git(["ls-remote", repository], f"cannot reach {shown} as workers would")
    heads = {line.split()[0] for line in listing.splitlines() if line.strip()}
    if commit in heads or any(_contains(head, commit) for head in heads):
        return
    raise CodeError(
        f"commit {commit} is not in {shown}, where workers fetch it: push it, then deploy again"
    )


def _contains(head: str, commit: str) -> bool:
    """Whether `head` (a commit this clone knows, or not) has `commit` in its history."""
    try:
        _git(["merge-base", "--is-ancestor", commit, head], "not an ancestor")
    except CodeError:
        return False
    return True


def pull_code(directory: str, repository: str = "", commit: str = "") -> dict[str, str]:
    """Pull step: change to the run's code, `directory` or the cached clone of `commit`, and
    make the flow import the project from there."""
    if repository:
        try:
            directory = str(checkout(repository, commit, code_cache()))
        except CodeError as exc:
            _crash_this_run(str(exc))
            raise
    os.chdir(directory)
    # A process worker starts the flow in a fresh process with this folder first on its path;
    # `prefect flow-run execute` (container workers' command) imports it in this process,
    # where this module brought the worker's own copy of the project: drop it.
    for name in [name for name in sys.modules if name.partition(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]
    return {"directory": directory}


def _crash_this_run(cause: str) -> None:
    """Mark the flow run this pull step serves `Crashed` with `cause`: its worker would say
    only that the process exited with an error, and a sharded run's parent shows the
    message of a shard's state. The worker's own crash report then finds it ended."""
    from prefect import get_client
    from prefect.states import Crashed

    run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run), Crashed(message=cause))
    except Exception:  # the worker's report stands; the cause is in the run's log too
        return


def refuse_relative_paths(paths: Mapping[str, str | None]) -> None:
    """A run whose code is a cloned commit runs inside that clone, where a relative local
    path would resolve: refuse one in a line naming the parameter (`name: value`)."""
    clone = Path.cwd()
    if clone.parent != code_cache().resolve():
        return
    for name, value in paths.items():
        if value and not value.startswith("s3://") and not Path(value).expanduser().is_absolute():
            raise CodeError(
                f"{name} {value!r} is a relative path, and this run's code is commit "
                f"{clone.name} cloned in {clone.parent}, where it would resolve: give an "
                "absolute path (a folder every worker sees) or an s3:// URI"
            )


def main() -> int:
    """`make deploy`'s first step: say where workers will find the code, or refuse in one line
    (`prefect deploy` would run the same check, but shows a traceback)."""
    try:
        code = record_code()
    except T2VError as error:  # a commit it cannot record, a bad setting
        print(f"make deploy: {error}", file=sys.stderr)
        return 2
    if code["repository"]:
        print(
            f"workers run commit {code['commit']} of {_shown(code['repository'])}, cloned once "
            "per machine into ~/.cache/t2v/code/<commit> (or under $XDG_CACHE_HOME)"
        )
    else:
        print(
            f"workers run the flows from {code['directory']}; on other machines, clone the "
            "project there too, or deploy with CODE_REPO=origin"
        )
    return 0


def code_cache() -> Path:
    """Where this machine keeps the commits it cloned: one folder per commit."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "t2v" / "code"


def checkout(repository: str, commit: str, cache: Path) -> Path:
    """`cache/commit`, a checkout of `commit` of `repository`, cloned on first use. Clones go
    to a temporary folder first and are renamed into place, so concurrent runs never see
    half a checkout; when two clone at once, the first rename wins and the other is dropped."""
    if not COMMIT.fullmatch(commit):
        raise CodeError(f"commit {commit!r} of {_shown(repository)} is not a full git hash")
    target = cache / commit
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{commit[:12]}-") as scratch:
        clone = Path(scratch) / "code"
        shown = _shown(repository)
        _git(["clone", "--quiet", "--no-checkout", repository, str(clone)], f"cannot clone {shown}")
        _git(
            ["-C", str(clone), "checkout", "--quiet", "--detach", commit],
            f"commit {commit} is not in {shown} (push it, then run again)",
        )
        try:
            clone.rename(target)
        except OSError as exc:
            if not target.is_dir():
                raise CodeError(f"cannot store commit {commit} in {target}: {exc}") from exc
    return target


def _git(arguments: list[str], failure: str) -> str:
    """git's output; on failure, CodeError `failure: git's first line`. Never prompts: a
    worker has no one to type a password or accept a host key."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    try:
        done = subprocess.run(
            ["git", *arguments],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
    except FileNotFoundError as exc:
        raise CodeError(f"{failure}: git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        said = next((line for line in exc.stderr.splitlines() if line.strip()), "no message")
        raise CodeError(f"{failure}: {USERINFO.sub('***@', said.strip())}") from exc
    return done.stdout.strip()


def _shown(url: str) -> str:
    """`url` without a password or token in it."""
    return USERINFO.sub("***@", url)


if __name__ == "__main__":
    sys.exit(main())

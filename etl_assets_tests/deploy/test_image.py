"""The image of deploy/Dockerfile, checked without a Docker engine.

The Dockerfile is read for what a build cannot be trusted to keep by itself (a non-root final
stage, the pinned uv, the code location it serves), and its install steps, which live in
deploy/install.sh, run here in a fresh directory: the resulting venv must serve the code
location exactly as the image's CMD starts it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._core.workspace.config_schema import process_workspace_config

from etl_assets.definitions import defs
from etl_assets.devstack.postgres import free_port
from etl_assets_tests.support import wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT_ROOT / "deploy" / "Dockerfile"
INSTALL_SCRIPT = PROJECT_ROOT / "deploy" / "install.sh"
UV = PROJECT_ROOT / ".tools" / "bin" / "uv"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    parsed: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        parsed.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return parsed


def stages() -> list[list[Instruction]]:
    """The build stages, each starting with its FROM (global ARGs before the first are dropped)."""
    found: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def arguments_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.arguments for i in stage if i.keyword == keyword]


def global_arg(name: str) -> str:
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and instruction.arguments.startswith(f"{name}="):
            return instruction.arguments.split("=", 1)[1]
    raise AssertionError(f"no global ARG {name} in {DOCKERFILE}")


def image_command() -> list[str]:
    (command,) = arguments_of(stages()[-1], "CMD")
    return json.loads(command)


def workspace_location() -> tuple[str, str]:
    """The module and location name the repository's workspace.yaml loads."""
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    module = entry["python_module"]
    return module["module_name"], module["location_name"]


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION := (\S+)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert match, "no UV_VERSION in the Makefile"
    return match[1]


def test_the_final_stage_runs_as_a_numeric_non_root_user_from_a_slim_python() -> None:
    builder, final = stages()[0], stages()[-1]
    assert len(stages()) == 2
    assert builder[0].arguments == "${PYTHON_IMAGE} AS builder"
    assert final[0].arguments == "${PYTHON_IMAGE}"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", global_arg("PYTHON_IMAGE"))
    users = arguments_of(final, "USER")
    assert users, "the final stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it; not root's.
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    keywords_after_user = {i.keyword for i in final[final.index(Instruction("USER", users[-1])) :]}
    assert keywords_after_user <= {"USER", "EXPOSE", "CMD", "ENV", "WORKDIR", "LABEL"}
    # The final stage installs nothing: it copies the builder's venv.
    assert any(a.startswith("--from=builder ") for a in arguments_of(final, "COPY"))
    assert not any("uv " in a or "pip " in a for a in arguments_of(final, "RUN"))


def test_the_image_serves_the_workspace_code_location_and_leaves_the_command_to_launchers() -> None:
    module, location = workspace_location()
    command = image_command()
    assert command[:3] == ["dagster", "code-server", "start"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["-m"] == module
    assert options["--location-name"] == location
    assert options["-h"] == "0.0.0.0"
    assert arguments_of(stages()[-1], "EXPOSE") == [options["-p"]]
    # Run launchers replace the command with `dagster api execute_run ...`: an ENTRYPOINT
    # would be prepended to it.
    assert all(i.keyword != "ENTRYPOINT" for stage in stages() for i in stage)
    environment = " ".join(arguments_of(stages()[-1], "ENV"))
    (workdir,) = arguments_of(stages()[-1], "WORKDIR")
    assert f"PATH={workdir}/.venv/bin:$PATH" in environment


def test_the_deployment_workspace_reaches_the_code_server_the_image_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_ASSETS_CODE_SERVER_HOST", "etl-assets-code.internal")
    path = PROJECT_ROOT / "deploy" / "workspace.yaml"
    result = process_workspace_config(yaml.safe_load(path.read_text()))
    assert result.success, result.errors
    workspace: Any = result.value
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    command = image_command()
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert server["host"] == "etl-assets-code.internal"
    assert str(server["port"]) == options["-p"]
    assert server["location_name"] == options["--location-name"] == workspace_location()[1]


def test_the_builder_installs_with_the_makefiles_uv_through_the_install_script() -> None:
    builder = stages()[0]
    runs = arguments_of(builder, "RUN")
    assert f'"uv=={makefile_uv_version()}"' in runs[0]

    # Dependencies before the source is copied, so code edits reuse the dependency layer.
    def position(keyword: str, ending: str) -> int:
        return next(
            n
            for n, i in enumerate(builder)
            if i.keyword == keyword and i.arguments.endswith(ending)
        )

    dependencies = position("RUN", "install.sh dependencies")
    project = position("RUN", "install.sh project")
    source = position("COPY", "etl_assets etl_assets")
    assert dependencies < source < project
    (workdir,) = arguments_of(builder, "WORKDIR")
    assert f"--from=builder {workdir} {workdir}" in arguments_of(stages()[-1], "COPY")
    script = INSTALL_SCRIPT.read_text()
    assert script.startswith("#!/bin/sh\n")
    assert os.access(INSTALL_SCRIPT, os.X_OK)
    syncs = re.findall(r'"\$uv" sync ([^\n]+)', script)
    assert len(syncs) == 2
    for sync in syncs:
        assert {"--frozen", "--no-dev", "--extra k8s"} <= {
            *sync.split(),
            *re.findall(r"--extra \S+", sync),
        }
        assert "--all-extras" not in sync
        assert "--group" not in sync


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allow-list: everything is excluded, then what the image needs is let back in.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in stages():
        for copy in arguments_of(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                assert source.split("/")[0] in allowed, f"COPY {source} is not in the context"


def test_the_image_holds_a_writable_dagster_home_with_the_ecs_instance_config() -> None:
    (workdir,) = arguments_of(stages()[-1], "WORKDIR")
    setup = " ".join(arguments_of(stages()[-1], "RUN"))
    link = re.search(rf"ln -s {workdir}/deploy/ecs/dagster\.yaml (\S+)/dagster\.yaml", setup)
    assert link, "the image should link deploy/ecs/dagster.yaml into a DAGSTER_HOME"
    home = link[1]
    assert re.search(rf"chown dagster:dagster [^&]*{re.escape(home)}\b", setup)
    assert f"DAGSTER_HOME={home}" in (PROJECT_ROOT / "deploy" / "README.md").read_text()
    assert f"DAGSTER_HOME={home}" in (PROJECT_ROOT / "deploy" / "ecs" / "dagster.yaml").read_text()


def test_the_ca_bundle_the_ecs_instance_verifies_rds_with_is_in_the_image() -> None:
    ecs = yaml.safe_load((PROJECT_ROOT / "deploy" / "ecs" / "dagster.yaml").read_text())
    sslrootcert = ecs["storage"]["postgres"]["postgres_db"]["params"]["sslrootcert"]
    (added,) = arguments_of(stages()[-1], "ADD")
    assert added.split()[-1] == sslrootcert
    assert "--chmod=644" in added.split()


@dataclass(frozen=True)
class Installed:
    """The project as the builder stage leaves it: source, lock and venv."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / ".venv" / "bin"

    def python(self, code: str, environment: Mapping[str, str]) -> str:
        return subprocess.run(
            [str(self.bin / "python"), "-c", code],
            env=dict(environment),
            cwd=self.root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def install_environment(home: Path) -> dict[str, str]:
    """The test process's environment without its venv, plus what the builder stage sets."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")
    }
    environment.update(
        UV=str(UV),
        UV_PYTHON="python3",  # the machine's, as the Makefile uses it; the image uses its own
        UV_PYTHON_DOWNLOADS="never",
        DAGSTER_HOME=str(home),
        # As for the image's user, who cannot write them: only the install compiles bytecode.
        PYTHONDONTWRITEBYTECODE="1",
    )
    return environment


def run_install_step(root: Path, step: str, environment: Mapping[str, str]) -> None:
    result = subprocess.run(
        ["deploy/install.sh", step],
        cwd=root,
        env=dict(environment),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """deploy/install.sh run as the builder stage runs it: dependencies, then the project."""
    version = subprocess.run(
        [str(UV), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.split()[1] == makefile_uv_version()
    # Named like the image's /opt/etl_assets: the project's directory names its code location.
    root = tmp_path_factory.mktemp("image") / "etl_assets"
    (root / "deploy").mkdir(parents=True)
    environment = install_environment(tmp_path_factory.mktemp("dagster_home"))
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(PROJECT_ROOT / name, root / name)
    shutil.copy2(INSTALL_SCRIPT, root / "deploy" / "install.sh")
    run_install_step(root, "dependencies", environment)
    shutil.copy2(PROJECT_ROOT / "README.md", root / "README.md")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT_ROOT / "etl_assets", root / "etl_assets", ignore=ignore)
    shutil.copytree(PROJECT_ROOT / "deploy", root / "deploy", ignore=ignore, dirs_exist_ok=True)
    run_install_step(root, "project", environment)
    return Installed(root)


PROBE = """
import importlib.util, json
import etl_assets
from etl_assets.definitions import defs
names = ["dagster_k8s", "dagster_aws.ecs", "dagster_postgres", "dagster_webserver", "pytest",
         "pgserver", "moto", "ruff", "duckdb", "playwright"]
print(json.dumps({
    "package": etl_assets.__file__,
    "assets": sorted(k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()),
    "present": {n: importlib.util.find_spec(n) is not None for n in names},
}))
"""


def test_the_installed_venv_loads_the_definitions_with_runtime_packages_only(
    installed: Installed, tmp_path: Path
) -> None:
    report = json.loads(installed.python(PROBE, install_environment(tmp_path)))
    # Editable: the package is the source tree next to pyproject.toml, where Dagster looks for
    # the project's [tool.dg] settings.
    assert Path(report["package"]).resolve().parent == (installed.root / "etl_assets").resolve()
    expected = sorted(k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys())
    assert report["assets"] == expected
    sources = sorted((installed.root / "etl_assets").rglob("*.py"))
    compiled = {p.name.split(".")[0] for p in (installed.root / "etl_assets").rglob("*.pyc")}
    assert {p.stem for p in sources} <= compiled
    present = report["present"]
    assert {n for n, found in present.items() if found} == {
        "dagster_k8s",
        "dagster_aws.ecs",
        "dagster_postgres",
        "dagster_webserver",
    }


@pytest.fixture
def code_server(installed: Installed, tmp_path: Path) -> Generator[int]:
    """The image's CMD on a free port of 127.0.0.1, with the venv first on PATH as in the image."""
    port = free_port()
    command = image_command()
    command[command.index("-p") + 1] = str(port)
    command[command.index("-h") + 1] = "127.0.0.1"
    environment = install_environment(tmp_path)
    environment["PATH"] = f"{installed.bin}{os.pathsep}{environment['PATH']}"
    with (tmp_path / "code-server.log").open("wb") as log:
        # Its own process group: the code server starts a child that serves the definitions.
        process = subprocess.Popen(
            command,
            cwd=installed.root,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield port
        finally:
            # The server and its child hold no state worth a graceful stop.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_the_image_command_serves_the_code_location_over_grpc(
    installed: Installed, code_server: int
) -> None:
    dagster = str(installed.bin / "dagster")

    def healthy() -> bool:
        check = subprocess.run(
            [dagster, "api", "grpc-health-check", "-p", str(code_server)],
            capture_output=True,
            check=False,
        )
        return check.returncode == 0

    wait_for(healthy, timeout=120, what="the code server's gRPC health check", poll=1)

"""The instance configs of deploy/: valid for Dagster, complete for the runs, sized from the bench.

Dagster has no public way to validate an instance config without connecting to its storage, so
these tests use the functions `DagsterInstance` itself loads a `dagster.yaml` with: the schema
check of the whole file, then each configurable class's own schema on its section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import (
    dagster_instance_config,
)
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData
from dagster._serdes.config_class import (
    class_from_code_pointer,
)
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import construct_dagster_k8s_job

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy"
BENCH_RESULTS = PROJECT_ROOT / "bench" / "results"
TARGETS = ["ecs", "k8s"]
LAUNCHERS = {"ecs": ("dagster_aws.ecs", "EcsRunLauncher"), "k8s": ("dagster_k8s", "K8sRunLauncher")}
# The benchmark rows that are a whole load of ours (IO managers, in or out of a Dagster run).
OUR_METHODS = {
    "ours",
    "dagster",
    "dagster_cli",
    "backfill_single_run",
    "backfill_run_per_partition",
}
# Fargate's valid memory sizes (MiB) for each CPU size (CPU units).
FARGATE_MEMORY = {
    "256": range(512, 2049, 512),
    "512": range(1024, 4097, 1024),
    "1024": range(2048, 8193, 1024),
    "2048": range(4096, 16385, 1024),
    "4096": range(8192, 30721, 1024),
}


INSTANCES = {"repository": PROJECT_ROOT, **{target: DEPLOY / target for target in TARGETS}}
"""Every directory whose dagster.yaml configures an instance: `make dev`'s and the deployments'."""
# Where an instance keeps its data and starts runs: left to a local instance's defaults when the
# rest of a config is loaded into a real DagsterInstance without its database or cluster.
STORAGE_AND_LAUNCH = ("storage", "run_launcher", "compute_logs")
# What the project relies on the daemon for: sensors, schedules, backfills, the run queue, run
# monitoring, run retries, freshness policies and the automation sensor (ASSET).
PROJECT_DAEMONS = {
    "SENSOR",
    "ASSET",
    "SCHEDULER",
    "BACKFILL",
    "QUEUED_RUN_COORDINATOR",
    "MONITORING",
    "EVENT_LOG_CONSUMER",
    "FRESHNESS_DAEMON",
}


def config_path(target: str) -> Path:
    return DEPLOY / target / "dagster.yaml"


def load(target: str) -> dict[str, Any]:
    return yaml.safe_load(config_path(target).read_text())


def env_references(node: object) -> Iterator[str]:
    """Every variable named by an `{env: NAME}` value under `node`."""
    if isinstance(node, dict):
        if list(node) == ["env"]:
            yield str(node["env"])
            return
        for value in node.values():
            yield from env_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from env_references(value)


def leaves(node: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every scalar under `node`, with the keys (and list indexes) leading to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, str(index)))
    else:
        yield path, node


def declared_sources() -> list[dict[str, Any]]:
    """The `source` block of every PostgresTablesComponent under etl_assets/defs."""
    sources: list[dict[str, Any]] = []
    for path in sorted((PROJECT_ROOT / "etl_assets" / "defs").rglob("defs.yaml")):
        document = yaml.safe_load(path.read_text())
        if str(document.get("type", "")).endswith("PostgresTablesComponent"):
            sources.append(document["attributes"]["source"])
    assert sources, "no source declared under etl_assets/defs"
    return sources


def dummy_value(name: str) -> str:
    return "5432" if name.endswith("_PORT") else f"dummy-{name.lower().replace('_', '-')}"


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def set_dummy_environment(target: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every variable the config reads, set to a recognizable dummy value."""
    document = load(target)
    names = set(env_references(document))
    names |= set(document["run_launcher"]["config"].get("env_vars", []))
    environment = {name: dummy_value(name) for name in sorted(names)}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def environment(target: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return set_dummy_environment(target, monkeypatch)


def process_section(data: ConfigurableClassData) -> Any:
    """A section's config checked against its class's own schema (an `EvaluateValueResult`)."""
    klass: Any = class_from_code_pointer(data.module_name, data.class_name)
    return process_config(klass.config_type(), data.config_dict)


def instance_config_errors(directory: Path) -> list[str]:
    """What Dagster finds wrong with the `dagster.yaml` in `directory`, section by section."""
    try:
        dagster_instance_config(str(directory))
        ref = InstanceRef.from_dir(str(directory))
    except DagsterInvalidConfigError as error:
        return [str(error)]
    sections: dict[str, ConfigurableClassData | None] = {
        "storage": ref.storage_data,
        "run_coordinator": ref.run_coordinator_data,
        "run_launcher": ref.run_launcher_data,
        "compute_logs": ref.compute_logs_data,
    }
    errors: list[str] = []
    for name, data in sections.items():
        if data is None:
            errors.append(f"{name}: missing")
            continue
        result = process_section(data)
        if not result.success:
            errors.extend(f"{name}: {error.message}" for error in result.errors or [])
    return errors


def processed_section(target: str, name: str) -> dict[str, Any]:
    """One section's config as its class receives it (environment variables resolved)."""
    ref = InstanceRef.from_dir(str(DEPLOY / target))
    result = process_section(getattr(ref, f"{name}_data"))
    assert result.success, result.errors
    return dict(result.value)


def test_the_instance_config_validates_and_each_class_accepts_its_section(
    target: str, environment: dict[str, str]
) -> None:
    assert instance_config_errors(DEPLOY / target) == []
    ref = InstanceRef.from_dir(str(DEPLOY / target))
    launcher = ref.run_launcher_data
    assert launcher is not None
    assert (launcher.module_name, launcher.class_name) == LAUNCHERS[target]
    assert ref.storage_data is not None
    assert ref.storage_data.class_name == "DagsterPostgresStorage"
    assert ref.run_coordinator_data is not None
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    # The storage's credentials come from the environment, resolved when the instance loads.
    database = processed_section(target, "storage")["postgres_db"]
    assert database["password"] == environment["DAGSTER_PG_PASSWORD"]
    assert database["hostname"] == environment["DAGSTER_PG_HOST"]
    assert database["port"] == 5432
    # dagster-postgres fails on SQLAlchemy 2.1's default driver for postgresql://.
    assert database["scheme"] == "postgresql+psycopg2"
    assert database["params"]["sslmode"] == "verify-full"


# Each mistake, and a word the error has to name: the test fails if validation misses it.
MISTAKES: dict[str, tuple[tuple[str, ...], object, str]] = {
    "an unknown launcher field": (
        ("run_launcher", "config", "run_resource"),
        {"cpu": "1024"},
        "run_resource",
    ),
    "a misspelled queue limit": (
        ("concurrency", "runs", "max_concurent_runs"),
        16,
        "max_concurent_runs",
    ),
    "a queue limit that is not a number": (
        ("concurrency", "runs", "max_concurrent_runs"),
        "16x",
        "max_concurrent_runs",
    ),
    "an unknown monitoring field": (("run_monitoring", "health_check"), True, "health_check"),
    "a password that is neither text nor a variable": (
        ("storage", "postgres", "postgres_db", "password"),
        {"secret": "DAGSTER_PG_PASSWORD"},
        "secret",
    ),
    "a pool granularity Dagster does not have": (
        ("concurrency", "pools", "granularity"),
        "step",
        "granularity",
    ),
    "a compute log bucket left empty": (("compute_logs", "config", "bucket"), None, "bucket"),
    "a misspelled freshness switch": (("freshness", "enable"), True, "enable"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_in_the_config_fails_validation(
    target: str, environment: dict[str, str], tmp_path: Path, mistake: str
) -> None:
    path, value, named = MISTAKES[mistake]
    document = load(target)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(document))
    errors = instance_config_errors(tmp_path)
    assert errors
    assert any(named in error for error in errors), errors


def test_runs_queue_and_wait_for_source_pools_as_in_the_project_instance(target: str) -> None:
    document = load(target)
    project = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert document["run_coordinator"] == project["run_coordinator"]
    # The queue's limit lives under `concurrency` only: Dagster refuses it in both places.
    assert "config" not in document["run_coordinator"]
    pools = document["concurrency"]["pools"]
    assert pools["granularity"] == project["concurrency"]["pools"]["granularity"] == "op"
    assert pools["default_limit"] == project["concurrency"]["pools"]["default_limit"]
    # A run waits in the queue, not in a task or pod, while its source's pool is full.
    assert pools["op_granularity_run_buffer"] == 0
    # Room for every source's pool at once: the pools, not the queue, bound the extractions.
    pool_sum = sum(
        int(source.get("max_concurrent_extractions", pools["default_limit"]))
        for source in declared_sources()
    )
    assert document["concurrency"]["runs"]["max_concurrent_runs"] >= max(
        pool_sum, pools["default_limit"]
    )
    assert document["run_retries"] == project["run_retries"]


def test_run_monitoring_fails_dead_workers_and_frees_their_pool_slots(target: str) -> None:
    monitoring = load(target)["run_monitoring"]
    project = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["free_slots_after_run_end_seconds"] > 0
    assert monitoring["start_timeout_seconds"] >= project["start_timeout_seconds"]
    assert monitoring["max_runtime_seconds"] == project["max_runtime_seconds"]
    assert monitoring["poll_interval_seconds"] <= project["poll_interval_seconds"]


def required_daemons(document: dict[str, Any], directory: Path) -> set[str]:
    """The daemons an instance of `document` runs (its data kept locally, in `directory`)."""
    directory.mkdir()
    settings = {k: v for k, v in document.items() if k not in STORAGE_AND_LAUNCH}
    (directory / "dagster.yaml").write_text(yaml.safe_dump(settings))
    with dg.DagsterInstance.from_config(str(directory)) as instance:
        return set(instance.get_required_daemon_types())


@pytest.mark.parametrize("instance", list(INSTANCES))
def test_every_instance_runs_the_daemons_the_project_needs_freshness_included(
    instance: str, tmp_path: Path
) -> None:
    document = yaml.safe_load((INSTANCES[instance] / "dagster.yaml").read_text())
    # Stated in the file, not left to the installed Dagster's default.
    assert document["freshness"] == {"enabled": True}
    assert required_daemons(document, tmp_path / "as-written") >= PROJECT_DAEMONS
    # The section decides: turned off, no daemon evaluates the tables' freshness policies.
    document["freshness"]["enabled"] = False
    assert "FRESHNESS_DAEMON" not in required_daemons(document, tmp_path / "turned-off")


SECRET_PATTERNS = {
    "an ARN (account and resource ids)": re.compile(r"arn:aws[a-z-]*:"),
    "credentials in a URL": re.compile(r"://[^/\s:@]+:[^/\s@]+@"),
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a PEM block": re.compile(r"-----BEGIN"),
}


def test_no_secret_is_written_in_the_config(target: str) -> None:
    text = config_path(target).read_text()
    for what, pattern in SECRET_PATTERNS.items():
        assert not pattern.search(text), f"{config_path(target)} holds {what}"
    document = load(target)
    # A URL would carry the password: the storage takes its parts, the password from a variable.
    assert "postgres_url" not in document["storage"]["postgres"]
    for path, _ in leaves(document):
        named_secret = {"password", "valueFrom"} & set(path)
        if named_secret:
            assert path[-1] == "env", f"{'.'.join(path)} must come from an environment variable"


def test_ecs_runs_receive_every_variable_the_definitions_and_the_instance_read() -> None:
    document = load("ecs")
    launcher = document["run_launcher"]["config"]
    variables = set(launcher["env_vars"])
    secrets = {secret["name"] for secret in launcher["secrets"]}
    for source in declared_sources():
        assert source["dsn_env"] in variables
        if source.get("password_env"):
            assert source["password_env"] in secrets
            assert source["password_env"] not in variables
    assert "ETL_LAKE_BUCKET" in variables
    # A run opens the instance too: whatever the other sections read must reach it.
    instance = {key: value for key, value in document.items() if key != "run_launcher"}
    assert set(env_references(instance)) <= variables | secrets
    assert "DAGSTER_PG_PASSWORD" in secrets


def test_k8s_runs_receive_the_storage_password_under_the_name_the_config_reads() -> None:
    document = load("k8s")
    launcher = document["run_launcher"]["config"]
    # K8sRunLauncher exposes the `postgresql-password` key of this Secret as DAGSTER_PG_PASSWORD.
    assert launcher["postgres_password_secret"]
    assert document["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": "DAGSTER_PG_PASSWORD"
    }
    assert launcher["env_config_maps"]
    assert launcher["env_secrets"]


def benchmark_peak_rss_mib(results: Path) -> float:
    """The largest peak RSS of any of our loads in one `make bench` results file."""
    peaks: list[float] = []
    header: list[str] | None = None
    for line in results.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if "method" in cells and "peak RSS MB" in cells:
            header = cells
        elif header is not None and len(cells) == len(header):
            row = dict(zip(header, cells, strict=True))
            if row["method"] in OUR_METHODS:
                peaks.append(float(row["peak RSS MB"]))
    assert peaks, f"no peak RSS of our methods in {results}"
    return max(peaks)


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"{quantity!r} is not a quantity in Mi or Gi"
    return int(match[1]) * units[match[2]]


def test_run_sizes_leave_headroom_over_the_benchmarks_peak_memory(target: str) -> None:
    latest = max(BENCH_RESULTS.glob("*.md"))
    peak = benchmark_peak_rss_mib(latest)
    text = config_path(target).read_text()
    cited = re.findall(r"bench/results/[\w.-]+\.md", text)
    assert cited, "the run size should cite the benchmark it comes from"
    assert all((PROJECT_ROOT / path).exists() for path in cited)
    launcher = load(target)["run_launcher"]["config"]
    if target == "k8s":
        requests, limits = launcher["resources"]["requests"], launcher["resources"]["limits"]
        assert mebibytes(requests["memory"]) >= 1.25 * peak
        assert mebibytes(limits["memory"]) >= 2 * peak
        assert float(requests["cpu"]) >= 1
    else:
        size = launcher["run_resources"]
        assert int(size["memory"]) in FARGATE_MEMORY[size["cpu"]]
        assert int(size["memory"]) >= 2 * peak
        assert int(size["cpu"]) >= 1024


def test_the_ecs_launcher_builds_each_runs_task_from_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = set_dummy_environment("ecs", monkeypatch)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    ref = InstanceRef.from_dir(str(DEPLOY / "ecs"))
    assert ref.run_launcher_data is not None
    launcher = ref.run_launcher_data.rehydrate(EcsRunLauncher)
    # What run monitoring relies on to fail a run whose task stopped.
    assert launcher.supports_check_run_worker_health
    context = EcsContainerContext.create_for_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id="0" * 32), launcher
    )
    assert context.run_resources == {"cpu": "1024", "memory": "2048"}
    assert context.task_role_arn == environment["ETL_ASSETS_RUN_TASK_ROLE_ARN"]
    assert context.execution_role_arn == environment["ETL_ASSETS_RUN_EXECUTION_ROLE_ARN"]
    assert {secret["name"]: secret["valueFrom"] for secret in context.secrets} == {
        "DAGSTER_PG_PASSWORD": environment["DAGSTER_PG_PASSWORD_SECRET_ARN"],
        "ETL_SHOP_PG_PASSWORD": environment["ETL_SHOP_PG_PASSWORD_SECRET_ARN"],
    }
    passed = load("ecs")["run_launcher"]["config"]["env_vars"]
    assert context.get_environment_dict() == {name: environment[name] for name in passed}


def test_the_k8s_launcher_renders_a_run_job_with_the_configured_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_dummy_environment("k8s", monkeypatch)
    ref = InstanceRef.from_dir(str(DEPLOY / "k8s"))
    data = ref.run_launcher_data
    assert data is not None
    # Outside a cluster: the same config, pointed at a kubeconfig nothing listens behind.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config = {
        **data.config_dict,
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    launcher = ConfigurableClassData(
        data.module_name, data.class_name, yaml.safe_dump(config)
    ).rehydrate(K8sRunLauncher)
    assert launcher.supports_check_run_worker_health
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="0" * 32)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image="etl-assets:test", run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-test",
        pod_name="dagster-run-test",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={},
    )
    assert job.spec is not None
    assert job.spec.template.spec is not None
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.resources.requests == {"cpu": "1", "memory": "512Mi"}
    assert container.resources.limits == {"memory": "1Gi"}
    assert container.security_context.run_as_non_root is True
    assert container.security_context.allow_privilege_escalation is False
    password = next(env for env in container.env if env.name == "DAGSTER_PG_PASSWORD")
    assert password.value_from.secret_key_ref.name == "etl-assets-dagster-pg"
    assert {source.config_map_ref.name for source in container.env_from if source.config_map_ref}
    assert {source.secret_ref.name for source in container.env_from if source.secret_ref}
    # The CA the storage's sslrootcert names is mounted where it says.
    ca = Path(load("k8s")["storage"]["postgres"]["postgres_db"]["params"]["sslrootcert"])
    (mount,) = container.volume_mounts
    assert Path(mount.mount_path) == ca.parent
    assert mount.read_only is True
    (volume,) = pod.volumes
    assert volume.name == mount.name
    assert volume.config_map.name
    assert pod.service_account_name == "etl-assets-run"
    assert job.spec.ttl_seconds_after_finished == 3600


def test_every_variable_a_deployment_reads_is_documented(target: str) -> None:
    readme = (DEPLOY / "README.md").read_text()
    document = load(target)
    names = set(env_references(document))
    names |= set(document["run_launcher"]["config"].get("env_vars", []))
    names |= set(env_references(yaml.safe_load((DEPLOY / "workspace.yaml").read_text())))
    undocumented = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", readme))
    assert undocumented == [], f"deploy/README.md does not explain {undocumented}"

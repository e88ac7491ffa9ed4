"""deploy/: the compose stack, Prometheus and the Grafana dashboard cannot rot unnoticed.

Docker cannot run here, so these read the files: the compose services the issue names are
there and point at files and commands that exist, Prometheus scrapes the port the server
listens on, and every metric the dashboard queries is one the server exports (the names
are read from server/metrics.py's registry, so renaming a metric fails here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from realtime_avatar.server import metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\bavatar_[a-z0-9_]+\b")
# The series a family of each type exports (prometheus_client's names).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _yaml(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "grafana" / "realtime-avatar.json").read_text("utf-8")))


def _exported_series() -> set[str]:
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return found


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = _exported_series()
    queried: dict[str, str] = {}
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            for name in METRIC.findall(target["expr"]):
                queried.setdefault(name, panel["title"])
    assert queried, "the dashboard queries no avatar_* metric"
    missing = {name: title for name, title in queried.items() if name not in exported}
    assert not missing, f"queried by the dashboard but not in server/metrics.py: {missing}"


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    exprs = " ".join(t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", []))
    for what, name in [
        ("turn latencies", "avatar_turn_stage_seconds_bucket"),
        ("fps", "avatar_frames_sent_total"),
        ("sessions", "avatar_sessions_active"),
        ("job queue depth", "avatar_video_jobs_queued"),
        ("job durations", "avatar_video_job_seconds_bucket"),
        ("errors", 'outcome="error"'),
        ("per-node load", "avatar_node_info"),
    ]:
        assert name in exprs, f"no panel shows {what} ({name})"


def test_dashboard_panels_are_well_formed_and_use_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    datasource = _yaml("grafana/provisioning/datasources/prometheus.yaml")["datasources"][0]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), (panel["title"], expr)
            assert expr.count("{") == expr.count("}"), (panel["title"], expr)


def test_compose_brings_up_redis_a_server_two_workers_prometheus_and_grafana() -> None:
    compose = _yaml("compose.yaml")
    services = compose["services"]
    commands = {name: service.get("command") for name, service in services.items()}
    assert services["redis"]["image"].startswith("redis:")
    assert commands["server"][:2] == ["avatar", "serve"]
    workers = [name for name, command in commands.items() if command == ["avatar", "worker"]]
    assert len(workers) == 2, commands
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ["server", *workers]:
        service = services[name]
        env = service["environment"]
        # One Redis and one data folder (the jobs' files) for the server and the workers.
        assert env["AVATAR_REDIS_URL"] == services["server"]["environment"]["AVATAR_REDIS_URL"]
        assert env["AVATAR_DATA_DIR"] == "/data" and "avatar-data:/data" in service["volumes"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()
    redis_port = services["redis"]["command"][services["redis"]["command"].index("--port") + 1]
    assert env["AVATAR_REDIS_URL"].startswith(f"redis://127.0.0.1:{redis_port}/")


def test_compose_mounts_files_that_exist_and_prometheus_scrapes_the_server() -> None:
    compose = _yaml("compose.yaml")
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
    server = compose["services"]["server"]["command"]
    port = server[server.index("--port") + 1]
    prometheus = _yaml("prometheus.yml")
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    ]
    assert f"127.0.0.1:{port}" in targets
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in prometheus["scrape_configs"]
    )


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_commands_compose_runs_exist(command: str) -> None:
    from typer.main import get_command

    from realtime_avatar.cli import app

    group = get_command(app)
    assert command in group.commands  # type: ignore[attr-defined]


def test_the_image_installs_what_make_serve_installs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    apt = re.search(r"^APT_PACKAGES := (.+)$", makefile, re.M)
    assert apt is not None
    # Chromium is for the browser tests and redis-server runs in its own container.
    for package in set(apt.group(1).split()) - {"chromium", "redis-server"}:
        assert package in dockerfile, f"the image lacks {package} (Makefile APT_PACKAGES)"
    assert "-c constraints.txt" in dockerfile
    pipecat = re.search(r"--no-deps (pipecat-ai==\S+)", makefile)
    assert pipecat is not None and pipecat.group(1) in dockerfile
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), path
            assert f"!{path.rstrip('/')}" in ignored.replace("/\n", "\n"), path

"""docker-compose.yml and its Dockerfiles are consistent with the repository.

No Docker engine runs on the development machines, so the compose set-up is
checked statically: build contexts, Dockerfiles and every COPY source exist,
ports are well formed and never publish 5432 on the host (a local PostgreSQL
owns it), named volumes are declared, ``depends_on`` names real services, the
skyclass service's SKYCLASS_DATABASE_URL points at the database service (same
database name as the server's pg_cron setting), and the PostgreSQL image is
built for 17 with the same ``.ci/install-system.sh`` that ``make`` runs for the
README set-up. ``docker compose config`` runs too where the plugin exists.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from skyclass.compile.build import CC

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
INSTALL_SCRIPT = ".ci/install-system.sh"
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:(\d{1,5}):)?(\d{1,5})(?:/(?:tcp|udp))?$")


def compose() -> dict[str, Any]:
    """The parsed compose file."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def build_of(service: dict[str, Any]) -> tuple[Path, Path]:
    """(context, Dockerfile) of a service with a build section."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def copy_sources(arguments: str) -> list[str] | None:
    """Sources of a COPY/ADD (None for ``--from=``, which copies from another stage)."""
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = shlex.split(arguments.split(" #", 1)[0])
    if any(w.startswith("--from") for w in words):
        return None
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def services_with_build() -> list[tuple[str, dict[str, Any]]]:
    return [(n, s) for n, s in compose()["services"].items() if "build" in s]


def test_build_contexts_dockerfiles_and_copy_sources_exist() -> None:
    builds = services_with_build()
    assert {n for n, _ in builds} >= {"db", "skyclass"}
    for name, service in builds:
        context, dockerfile = build_of(service)
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
        steps = instructions(dockerfile)
        assert steps and steps[0][0] in ("FROM", "ARG"), f"{dockerfile}: must start with FROM"
        for word, arguments in steps:
            if word not in ("COPY", "ADD"):
                continue
            sources = copy_sources(arguments)
            assert sources != [], f"{dockerfile}: {word} {arguments} has no source"
            for source in sources or []:
                assert not source.startswith(("/", "..")), f"{dockerfile}: {source} leaves context"
                assert list(context.glob(source)), f"{dockerfile}: {word} source {source} missing"


def test_ports_are_well_formed_and_do_not_take_5432() -> None:
    for name, service in compose()["services"].items():
        for entry in service.get("ports", []):
            assert isinstance(entry, str), f"{name}: quote port {entry!r} (YAML base 60)"
            match = PORT.match(entry)
            assert match, f"{name}: malformed port {entry!r}"
            host, container = match.group(1), match.group(2)
            assert host is not None, f"{name}: {entry!r} publishes a random host port; name one"
            assert 0 < int(host) < 65536 and 0 < int(container) < 65536, entry
            assert int(host) != 5432, f"{name}: host port 5432 belongs to a local PostgreSQL"


def test_named_volumes_are_declared_and_dependencies_exist() -> None:
    data = compose()
    services = data["services"]
    declared = set((data.get("volumes") or {}).keys())
    for name, service in services.items():
        for entry in service.get("volumes", []):
            source = entry.split(":", 1)[0] if isinstance(entry, str) else entry.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} not declared at top level"
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_skyclass_service_uses_the_db_service() -> None:
    services = compose()["services"]
    environment = services["skyclass"]["environment"]
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) for e in environment)
    url = urlsplit(environment["SKYCLASS_DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres")
    assert url.hostname == "db" and "db" in services
    assert url.port in (None, 5432), "inside the compose network the server listens on 5432"
    db_env = services["db"]["environment"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == db_env["POSTGRES_PASSWORD"]
    assert "db" in services["skyclass"].get("depends_on", {})
    # pg_cron schedules jobs in the database named by cron.database_name: the same one.
    _, dockerfile = build_of(services["db"])
    cmd = " ".join(a for w, a in instructions(dockerfile) if w == "CMD")
    assert f"cron.database_name={db_env['POSTGRES_DB']}" in cmd
    assert "shared_preload_libraries=pg_cron" in cmd


def test_postgres_image_is_17_and_uses_the_readme_install_script() -> None:
    _, dockerfile = build_of(compose()["services"]["db"])
    steps = instructions(dockerfile)
    assert re.match(r"postgres:17(\b|-)", steps[0][1]), f"{dockerfile}: base must be postgres:17"
    runs = [a for w, a in steps if w == "RUN"]
    assert any(INSTALL_SCRIPT in a and re.search(r"\bPG_MAJOR=17\b", a) for a in runs), (
        f"{dockerfile} must run {INSTALL_SCRIPT} with PG_MAJOR=17"
    )
    assert any("/usr/lib/postgresql/17/bin/pg_config" in a and "install" in a for a in runs)
    # `make setup` (the README set-up) runs the same script.
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^system:\n\t@?bash " + re.escape(INSTALL_SCRIPT), makefile, re.MULTILINE)
    assert "PG_MAJOR" in (ROOT / INSTALL_SCRIPT).read_text(encoding="utf-8")


def test_skyclass_image_can_compile_models() -> None:
    _, dockerfile = build_of(compose()["services"]["skyclass"])
    runs = " ".join(a for w, a in instructions(dockerfile) if w == "RUN")
    assert re.search(rf"apt-get install .*\b{re.escape(CC)}\b", runs), (
        f"{dockerfile}: `skyclass compile` needs {CC} in the image"
    )


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine: docker compose config not run")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip("no docker compose plugin on this machine: docker compose config not run")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# -- the citus profile (docs/scale-out.md, "The Citus path") ------------------------------
CITUS_NODES = ("citus-coordinator", "citus-worker-1", "citus-worker-2")


def test_default_services_have_no_profile_and_citus_services_only_the_citus_one() -> None:
    services = compose()["services"]
    assert "profiles" not in services["db"] and "profiles" not in services["skyclass"]
    citus = {n for n, s in services.items() if "citus" in s.get("profiles", [])}
    assert citus == {*CITUS_NODES, "citus-setup"}
    for name in citus:
        assert services[name]["profiles"] == ["citus"], name


def test_citus_nodes_share_one_image_with_the_readme_install_script() -> None:
    services = compose()["services"]
    dockerfiles = {build_of(services[n])[1] for n in CITUS_NODES}
    assert len(dockerfiles) == 1, "every Citus node needs the same extensions"
    steps = instructions(dockerfiles.pop())
    # Citus 13 is built on PostgreSQL 17, the version of the db image.
    assert re.match(r"citusdata/citus:13\.\d+(\.\d+)?$", steps[0][1]), steps[0]
    runs = [a for w, a in steps if w == "RUN"]
    assert any(INSTALL_SCRIPT in a and re.search(r"\bPG_MAJOR=17\b", a) for a in runs)
    assert any("/usr/lib/postgresql/17/bin/pg_config" in a and "install" in a for a in runs)
    cmd = " ".join(a for w, a in steps if w == "CMD")
    assert "shared_preload_libraries=citus," in cmd, "citus must be loaded first"
    for name in CITUS_NODES:
        env = services[name]["environment"]
        assert (
            env["POSTGRES_DB"] == "skyclass" and f"cron.database_name={env['POSTGRES_DB']}" in cmd
        )
        assert "healthcheck" in services[name]


def test_citus_setup_migrates_the_coordinator_and_distributes_over_both_workers() -> None:
    services = compose()["services"]
    setup = services["citus-setup"]
    url = urlsplit(setup["environment"]["SKYCLASS_DATABASE_URL"])
    assert url.hostname == "citus-coordinator" and url.path == "/skyclass"
    assert url.password == services["citus-coordinator"]["environment"]["POSTGRES_PASSWORD"]
    assert set(setup["depends_on"]) == set(CITUS_NODES)
    assert all(d["condition"] == "service_healthy" for d in setup["depends_on"].values())
    assert setup["entrypoint"][:3] == ["python", "-m", "skyclass.shard.citus"]
    mount = next(v for v in setup["volumes"] if v.startswith("./docker/citus-setup.sql:"))
    assert setup["entrypoint"][3] == mount.split(":")[1]
    script = (ROOT / "docker" / "citus-setup.sql").read_text(encoding="utf-8")
    for worker in CITUS_NODES[1:]:
        assert f"citus_add_node('{worker}', 5432)" in script
    # The three moves of the documented path: registry as reference tables, predictions
    # distributed by object id, the scoring entry points as distributed functions.
    assert "create_reference_table(t)" in script
    assert "create_distributed_table('skyclass.prediction', 'object_id')" in script
    assert "create_distributed_function('skyclass.predict(bigint, real[])')" in script
    import importlib

    assert callable(importlib.import_module("skyclass.shard.citus").main)

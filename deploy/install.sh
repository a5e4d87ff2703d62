#!/bin/sh
# Installs etl_assets' locked runtime into the project's virtual environment (.venv, or
# $UV_PROJECT_ENVIRONMENT): the dependencies in uv.lock without the dev group, with the `k8s`
# extra, never re-resolved. The Dockerfile runs it twice, so the dependency layer is cached
# until pyproject.toml or uv.lock change; etl_assets_tests/deploy runs the same two steps.
#
#   deploy/install.sh dependencies   all but etl_assets itself (needs pyproject.toml, uv.lock)
#   deploy/install.sh project        etl_assets too (needs the source tree and README.md)
#
# Run it from the project root, with uv on PATH (or in $UV).
set -eu

uv="${UV:-uv}"
case "${1:-}" in
    dependencies)
        exec "$uv" sync --frozen --no-dev --extra k8s --no-install-project
        ;;
    project)
        # An editable install keeps the package in the source tree next to pyproject.toml:
        # Dagster finds the project's defs folder through [tool.dg] in that file.
        "$uv" sync --frozen --no-dev --extra k8s
        # Compiled now: the image's user cannot write __pycache__ next to the code, and every
        # run is a new process that imports it.
        exec "${UV_PROJECT_ENVIRONMENT:-.venv}/bin/python" -m compileall -q etl_assets
        ;;
    *)
        echo "usage: $0 dependencies|project" >&2
        exit 2
        ;;
esac

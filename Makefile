# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   synthetic data -> COCO -> TFRecords -> training -> evaluation -> export
#               -> saved_model_cli run -> pictures of the results
#   make test   the test suite
# Each creates .venv/ at the repository root when it is missing.
#   make test-beam  the Apache Beam runner's tests in their own environment, .venv-beam/
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=
# Test processes: one per core, at most 4 (each trains TensorFlow models); 0 runs them in
# this process. A file's tests stay in one process, so its module fixtures are built once.
PYTEST_WORKERS ?= auto

.PHONY: demo test lint protos venv clean

venv: $(STAMP)

# The pinned packages, then this project itself, editable and without dependencies (they
# are the pins): its commands (pyproject.toml [project.scripts]) land in .venv/bin, and
# `python data_prep/create_tfrecords.py` finds its packages from any directory.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

protos: $(STAMP)
	$(PY) -m buildtools.protos

# Lint and the dependency rules of .importlinter (one-way data flow, layers, no cycles).
lint: protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo

test: lint
	$(PY) -m pytest --numprocesses $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

DEMO_STEPS ?= 1000
DEMO_RECORDS := $(DEMO_DIR)/records
DEMO_IMAGE ?= val_000000.jpg
DEMO_OVERRIDES := \
	--config_override='train_input_reader { label_map_path: "$(DEMO_RECORDS)/label_map.pbtxt" tf_record_input_reader { input_path: "$(DEMO_RECORDS)/train-?????-of-00002.tfrecord" } }' \
	--config_override='eval_input_reader { label_map_path: "$(DEMO_RECORDS)/label_map.pbtxt" tf_record_input_reader { input_path: "$(DEMO_RECORDS)/val-?????-of-00001.tfrecord" } }'

demo: protos
	$(PY) -m data_prep.synthetic --output_dir $(DEMO_DIR)/shapes --split train:200 --split val:32 --seed 0
	$(PY) data_prep/create_tfrecords.py --format coco \
	    --annotations $(DEMO_DIR)/shapes/annotations/instances_train.json \
	    --images_dir $(DEMO_DIR)/shapes/images/train \
	    --output_dir $(DEMO_RECORDS) --split train --num_shards 2
	$(PY) data_prep/create_tfrecords.py --format coco \
	    --annotations $(DEMO_DIR)/shapes/annotations/instances_val.json \
	    --images_dir $(DEMO_DIR)/shapes/images/val \
	    --output_dir $(DEMO_RECORDS) --split val --num_shards 1
	$(PY) model_main_tf2.py --pipeline_config_path=pipelines/shapes_resnet18_fpn.config \
	    --model_dir=$(DEMO_DIR)/model --num_train_steps=$(DEMO_STEPS) --checkpoint_every_n=250 \
	    $(DEMO_OVERRIDES)
	$(PY) model_main_tf2.py --pipeline_config_path=pipelines/shapes_resnet18_fpn.config \
	    --model_dir=$(DEMO_DIR)/model --checkpoint_dir=$(DEMO_DIR)/model --eval_timeout=10 \
	    --num_train_steps=$(DEMO_STEPS) $(DEMO_OVERRIDES)
	$(PY) exporter_main_v2.py --input_type=image_tensor \
	    --pipeline_config_path=$(DEMO_DIR)/model/pipeline.config \
	    --trained_checkpoint_dir=$(DEMO_DIR)/model --output_directory=$(DEMO_DIR)/exported
	$(PY) -m models.tools.image_npy $(DEMO_DIR)/shapes/images/val/$(DEMO_IMAGE) $(DEMO_DIR)/image.npy
	$(VENV)/bin/saved_model_cli run --dir $(DEMO_DIR)/exported/saved_model --tag_set serve \
	    --signature_def serving_default --inputs input_tensor=$(DEMO_DIR)/image.npy \
	    --outdir $(DEMO_DIR)/saved_model_cli --overwrite
	$(PY) -m models.tools.show_outputs $(DEMO_DIR)/saved_model_cli \
	    --label_map $(DEMO_DIR)/exported/label_map.pbtxt
	$(PY) -m models.tools.infer --saved_model $(DEMO_DIR)/exported/saved_model \
	    --images '$(DEMO_DIR)/shapes/images/val/*' \
	    --annotations $(DEMO_DIR)/shapes/annotations/instances_val.json \
	    --output_dir $(DEMO_DIR)/predictions
	$(PY) -m models.tools.analyze --detections $(DEMO_DIR)/predictions/detections.json \
	    --annotations $(DEMO_DIR)/shapes/annotations/instances_val.json \
	    --images_dir $(DEMO_DIR)/shapes/images/val --output_dir $(DEMO_DIR)/analysis
	@echo "Pictures of the results: $(DEMO_DIR)/predictions/*.png"
	@echo "Where the model fails: $(DEMO_DIR)/analysis/index.html"
	@echo "TensorBoard: $(PY) -m tensorboard.main --logdir $(DEMO_DIR)/model"

clean:
	rm -rf $(DEMO_DIR)

# Optional: the Apache Beam runner's environment, .venv-beam/ (BUILD.md: apache-beam needs
# protobuf<7 and pillow<13, so it cannot share .venv). `make test-beam` builds it and runs
# the Beam runner's tests there; `make test` skips them.
VENV_BEAM := .venv-beam
PY_BEAM := $(VENV_BEAM)/bin/python
STAMP_BEAM := $(VENV_BEAM)/.requirements-installed
BEAM_TESTS ?= tests/test_beam_runner.py

.PHONY: venv-beam protos-beam test-beam

venv-beam: $(STAMP_BEAM)

$(STAMP_BEAM): requirements-beam.txt pyproject.toml
	@test -x $(PY_BEAM) || $(PYTHON) -m venv $(VENV_BEAM)
	$(PY_BEAM) -m pip install --disable-pip-version-check -r requirements-beam.txt
	$(PY_BEAM) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# One set of *_pb2.py serves both environments when the older protoc writes it: a protobuf
# runtime loads gencode of its own version or older, never newer. The Beam environment's
# grpcio-tools writes protobuf 6.33 gencode, which 6.33.6 and 7.36.2 both load; forced,
# because `make protos` in .venv writes 7.35 gencode, which protobuf 6 refuses.
protos-beam: $(STAMP_BEAM)
	$(PY_BEAM) -m buildtools.protos --force

test-beam: protos-beam
	$(PY_BEAM) -m pytest $(BEAM_TESTS) $(PYTEST_ARGS)

# `make demo`: set up .venv (once) and run the main job on the embedded default data.
# `make test`: set up .venv (once) and run the test suite, two tests at a time (pytest-xdist; the tests that share
# an expensive set-up carry one xdist_group and run in one worker).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-monailabel setup clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m monai_dwp pipeline --output-dir outputs/pipeline

test: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider -n 2 --dist loadgroup

# MONAI Label integration tests, in their own environment .venv-monailabel (see docs/monailabel.md)
test-monailabel:
	bash .ci/monailabel.sh

clean:
	rm -rf $(VENV) build *.egg-info

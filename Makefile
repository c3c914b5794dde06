# The two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CHAOS := $(VENV)/bin/chaos
JOURNAL ?= journal.json
EXPERIMENT ?= experiments/validate-emergence-defenses.yaml
# ci: compressed durations (about a minute); weekly: the seed's full durations.
PROFILE ?= ci

.PHONY: run test lint bench soak venv clean

$(VENV)/.installed: pyproject.toml
	@./.ci/check-python.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

# The journal decides (chaos exits 0 on a failed action), so the verdict runs either way.
# The HTML report (charts of the run's timeline, docs/report.md) goes next to the journal.
REPORT ?= $(basename $(JOURNAL)).html
run: venv
	-$(CHAOS) --no-version-check run --journal-path $(JOURNAL) \
		--var-file .ci/profiles/$(PROFILE).yaml $(EXPERIMENT)
	-@$(PY) -m chaosemergence.cli report $(JOURNAL) -o $(REPORT)
	@$(PY) -m chaosemergence.verdict $(JOURNAL)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Figures against anchors measured in the same run (docs/bench.md): prints a table and writes
# bench-results.json; the service section drives wrk (Debian: apt-get install -y wrk).
# BENCH_ARGS=--quick for a short run; BENCH_ARGS="--compare old.json" to set an earlier
# run beside this one.
# The experience and effectiveness sections read the journals .ci/run-experiment.sh left in
# $(RESULTS_DIR), when there are any (BENCH_ARGS=--experience measures them instead).
# From a fresh clone (no journals yet) it measures them: --experience runs `make run` and the
# CI-profile set (about ten minutes more), and the effectiveness section reads that set.
BENCH_ARGS ?=
BENCH_JOURNALS = $(if $(wildcard $(RESULTS_DIR)/journal-*.json),--results $(RESULTS_DIR),\
	$(if $(findstring --quick,$(BENCH_ARGS)),,--experience))
bench: venv
	$(PY) -m chaosemergence.bench $(BENCH_JOURNALS) $(BENCH_ARGS)

# Ten minutes (SOAK_ARGS="--minutes N" to change) of steady traffic against one system, a
# fault every minute, the flagship experiment back to back; prints per process memory,
# descriptors, threads and tasks, and the errors nobody injected; writes soak-results.json
# (docs/trust.md). Not part of `make test`.
SOAK_ARGS ?=
soak: venv
	$(PY) -m chaosemergence.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) bench-results.json soak-results.json soak-home journal*.json journal*.html chaostoolkit.log .pytest_cache

# The README's table of measured figures, from the journals .ci/run-experiment.sh left in
# $(RESULTS_DIR) (docs/weekly.md).
RESULTS_DIR ?= results
.PHONY: report
report: venv
	@$(PY) -m chaosemergence.report $(RESULTS_DIR) --markdown

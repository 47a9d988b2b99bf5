# Two commands on a fresh machine (see README.md):
#   make demo   set up .venv, build a demo MLflow store in build/demo, audit it, write its
#               runs' documentation to build/demo/reports, sign it with a throwaway key and
#               verify it, document the champion model version (Annex IV) with a system card,
#               compare it with version 1, and export its CycloneDX ML-BOM and the audit as
#               OSCAL assessment results
#   make test   set up .venv, run ruff, mypy and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := build/demo
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: demo test lint benchmark clean pango

# The core install has mlflow-skinny only; the tests and the demo store need the full MLflow
# (and scikit-learn), which the test and demo extras bring.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,demo]'
	@$(BIN)/python -c "import weasyprint" 2>/dev/null || $(MAKE) --no-print-directory pango
	touch $@

# WeasyPrint (PDF reports) needs the system's Pango. Installed here only when it is missing, on
# Debian/Ubuntu, as root; otherwise the command to run is printed.
PANGO_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
pango:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing $(PANGO_PACKAGES) for PDF output ..."; \
	  (apt-get install -y -q $(PANGO_PACKAGES) || (apt-get update -q && apt-get install -y -q $(PANGO_PACKAGES))) >/dev/null; \
	else \
	  echo "PDF output needs Pango: sudo apt-get install $(PANGO_PACKAGES) (or your system's equivalent)"; exit 1; \
	fi

# The demo's signing key is thrown away with build/demo; so is its random passphrase.
demo: export DEMO_KEY_PASSPHRASE := $(shell od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
demo: $(VENV)/.installed
	rm -rf $(DEMO_DIR)
	@echo "Building a demo MLflow store in $(DEMO_DIR) ..."
	$(BIN)/python samples/build_demo_store.py $(DEMO_DIR)
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit check"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit check; status=$$?; echo; \
	if [ $$status -eq 1 ]; then \
	  echo "mlflow-audit exited 1: the demo store has runs with gaps, so a CI gate fails here."; \
	  echo "Try: $(BIN)/mlflow-audit check --tracking-uri sqlite:///$(DEMO_DIR)/mlflow.db --model churn-classifier@champion"; \
	else exit $$status; fi
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit keygen --subject 'CN=Demo Signer,O=Acme ML' --out keys --passphrase-env DEMO_KEY_PASSPHRASE"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit keygen --subject "CN=Demo Signer,O=Acme ML" --out keys --passphrase-env DEMO_KEY_PASSPHRASE
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit report --out reports --organisation 'Acme ML' --author 'Demo' --sign keys/signer.p12 --passphrase-env DEMO_KEY_PASSPHRASE"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit report --out reports --organisation "Acme ML" --author "Demo" --sign keys/signer.p12 --passphrase-env DEMO_KEY_PASSPHRASE
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit verify reports --cert keys/signer.pem --against-store"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit verify reports --cert keys/signer.pem --against-store
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit report --model churn-classifier@champion --system-card ../../samples/system-card.yaml --out model-docs --organisation 'Acme ML' --sign keys/signer.p12 --passphrase-env DEMO_KEY_PASSPHRASE"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit report --model churn-classifier@champion --system-card ../../samples/system-card.yaml --out model-docs --organisation "Acme ML" --sign keys/signer.p12 --passphrase-env DEMO_KEY_PASSPHRASE
	@echo
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit diff churn-classifier/1 churn-classifier@champion"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit diff churn-classifier/1 churn-classifier@champion; status=$$?; \
	if [ $$status -eq 1 ]; then echo "(exit 1: the two versions differ)"; else exit $$status; fi
	@echo
	@echo "$$ cd $(DEMO_DIR) && mkdir -p exports && mlflow-audit export -f cyclonedx --model churn-classifier@champion --system-card ../../samples/system-card.yaml -o exports/churn-classifier-v3.cdx.json"
	@cd $(DEMO_DIR) && mkdir -p exports && ../../$(BIN)/mlflow-audit export -f cyclonedx --model churn-classifier@champion --system-card ../../samples/system-card.yaml -o exports/churn-classifier-v3.cdx.json
	@echo "$$ cd $(DEMO_DIR) && mlflow-audit export -f oscal -o exports/assessment-results.json"
	@cd $(DEMO_DIR) && ../../$(BIN)/mlflow-audit export -f oscal -o exports/assessment-results.json
	@echo
	@echo "Open $(DEMO_DIR)/model-docs/churn-classifier-v3.pdf: the champion's technical documentation"
	@echo "in Annex IV order. $(DEMO_DIR)/reports/summary.html shows every run's evidence."
	@echo "A reviewer with only a folder and the certificate verifies it offline with:"
	@echo "  $(BIN)/mlflow-audit verify $(DEMO_DIR)/model-docs --cert $(DEMO_DIR)/keys/signer.pem"
	@echo "$(DEMO_DIR)/exports holds the champion's CycloneDX ML-BOM and the audit as OSCAL"
	@echo "assessment results, for SBOM and GRC tools."

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers (the machines this runs on have two cores), a test file each at a time: every
# worker builds the session's stores and servers once for the files it runs.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_check.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_version.py

clean:
	rm -rf $(VENV) build dist

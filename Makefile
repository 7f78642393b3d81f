# Set-up and the main jobs. `make run` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run lint test bench bench-score app fuzz fuzz-midi fuzz-scores clean

# System packages for audio (FluidSynth + a GM soundfont, ffmpeg), engraved scores
# (Cairo, for cairosvg) and the browser tests (Chromium). Installed when we are root and apt is present;
# otherwise a note (audio and browser tests then say what is missing).
system-deps:
	@if command -v fluidsynth >/dev/null && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && command -v chromium >/dev/null && command -v ffmpeg >/dev/null && ldconfig -p 2>/dev/null | grep -q libcairo.so.2; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     fluidsynth fluid-soundfont-gm ffmpeg chromium chromium-driver libcairo2) >/dev/null 2>&1 \
	  || echo "note: could not install fluidsynth/fluid-soundfont-gm/ffmpeg/chromium/libcairo2 with apt-get"; \
	else \
	  echo "note: install fluidsynth, fluid-soundfont-gm, ffmpeg and chromium for audio and browser tests"; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,app]'
	touch $(STAMP)

setup: $(STAMP) system-deps

run: setup
	$(BIN)/chopinbot prepare --quiet
	$(BIN)/chopinbot generate --out out/chopinbot.mid --wav --png --seconds 30 --random-seed 1 --force

# The lint runs first: a small rule set (pyproject.toml) that keeps imports and habits tidy.
lint: setup
	$(BIN)/ruff check src tests scripts

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m chopinbot_tools.bench all --out bench

# Re-score the committed benchmark models, Piano-midi.de and JSB Chorales (seconds; exits 1 if an NLL differs).
bench-score: setup
	$(BIN)/chopinbot benchmark piano-midi --score bench/models/piano-midi --threads 1
	$(BIN)/chopinbot benchmark jsb-chorales --score bench/models/jsb-chorales --threads 1

# Hostile inputs (docs/reliability.md): 10,000 MIDI files, then 10,000 scores (hours on 2 cores:
# each score goes through verovio twice).
fuzz: fuzz-midi fuzz-scores

fuzz-midi: setup
	nice -n 19 $(BIN)/python -m chopinbot_tools.fuzz --cases 10000 --seed 1 --jobs 2 --report bench/fuzz.json

fuzz-scores: setup
	nice -n 19 $(BIN)/python -m chopinbot_tools.fuzz_scores --cases 10000 --seed 1 --jobs 2 --report bench/fuzz-scores.json

app: setup
	$(BIN)/chopinbot app

clean:  # bench/models holds committed weights: kept
	rm -rf out runs .pytest_cache
	find bench -mindepth 1 -maxdepth 1 ! -name models -exec rm -rf {} +

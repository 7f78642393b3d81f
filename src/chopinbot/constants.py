"""Every default of ChopinBot in one place, each with the reason it was chosen."""

from __future__ import annotations

from pathlib import Path

# --- The keyboard -----------------------------------------------------------
LOWEST_PITCH = 21  # A0, the lowest key of an 88-key piano (GM2 piano range)
HIGHEST_PITCH = 108  # C8, the highest key
N_KEYS = HIGHEST_PITCH - LOWEST_PITCH + 1  # 88

# --- Building states from MIDI ----------------------------------------------
# Boundaries are snapped to 1/48 of a beat: the grid holds 16ths, 32nds, 64ths
# and all triplet values (48 = 16 * 3), yet legato overlaps of a few ticks in
# these performances (8 % of raw states are shorter than 1/64 beat) vanish.
GRID_PER_BEAT = 48
# States shorter than this (in beats) are merged into their neighbour. After
# snapping, 7 % of the corpus's states still last exactly one grid step (1/48
# beat): legato overlaps of 5-15 ticks, not rhythm (the shortest written value
# in the corpus is a 64th-note triplet, 1/24 beat). Merging them removes them.
MIN_STATE_BEATS = 2 / GRID_PER_BEAT
# Sustain pedal: ignored by default. The notes then keep the lengths the
# performer's fingers gave them, which is what the model should learn (with the
# pedal applied every state is a blur of the whole harmony); the pedal is an
# effect of the performance that the renderer may add back.
PEDAL_MODE = "ignore"
# Safety caps for untrusted MIDI (a 100k-note file is almost surely hostile).
MAX_NOTES_PER_FILE = 200_000
MAX_STATES_PER_FILE = 100_000  # note boundaries before merging; the largest corpus piece has 3,529
MAX_KEY_SEGMENTS = 256  # key-signature segments per file (the corpus has at most 6)
MAX_MIDI_BYTES = 20 * 1024 * 1024

# --- Generating ---------------------------------------------------------------
# A seed is a window of this many states of a held-out piece or a primer, as in
# the original app (the CLI's --seed-len and --primer-states, the web app and the
# evaluation read it from here).
SEED_STATES = 16
# Before the seed window, up to this many states of what precedes it (the
# held-out piece's earlier bars, or the rest of a primer) are read by the model
# to warm its state and give the repeat lookups the piece's own material: with
# 16 states the lookups had nothing to match, and continuations lost the seed's
# register and left-hand figure within seconds.
WARM_STATES = 512
# How many keys must sound in every generated state; 0 lets the music rest.  It was 1
# until 2026-12-07: keys drawn one by one left every key off far too often (13 % of
# the states of the first model with the repeats input).  The joint decoder draws the
# silent state with its true probability, and the 48 pieces' training states rest in
# 4.2 % of them (short breaths between notes, 0.09 s at the median): with 0 the model
# rests in 1-6 %, the realism features' silent time goes from none to 0.027 of an
# excerpt (Chopin 0.039) and the classifier's accuracy on the valid seeds from 0.798
# to 0.772 (six paired draws; docs/training-history.md).  ``--min-keys 1`` forbids rests.
MIN_KEYS = 0

# --- Splits -----------------------------------------------------------------
VALID_FRACTION = 0.10  # of the states, whole pieces only
TEST_FRACTION = 0.10
MIN_SPLIT_PIECES = 4

# --- Paths ------------------------------------------------------------------
PACKAGE_DIR = Path(__file__).resolve().parent
# The bundled corpus lives inside the package so that an installed ChopinBot
# finds it without the source tree.
BUNDLED_CORPUS_DIR = PACKAGE_DIR / "data" / "chopin"
# The bundled corpus `prepare` reads without inputs (chopinbot.dataset.corpus.CORPORA): the 48 performed
# pieces, as every model so far was trained on (the larger corpora are compared in docs/corpus.md).
DEFAULT_CORPUS = "chopin48"
# Models shipped inside the package, by name (``--model NAME``); the default is SHIPPED_MODEL.
BUNDLED_MODELS_DIR = PACKAGE_DIR / "models"
# 2026-12-07 (end of day): the Transformer backbone (3 blocks x 128, ALiBi, span 256) on all 25 piano-midi.de
# composers + the Chopin editions with controls and style heads, 47 CPU-minutes, and no Chopin epochs
# after: on the valid pieces it predicts Chopin better than with them (key NLL 3.455 against 3.470) and
# its music is told from Chopin less often (docs/training-history.md).  piano-transformer (the same
# pretraining + 3 epochs on Chopin) was the default from 2026-12-07; piano-controls (the same recipe on
# a 2x128 LSTM, 15 CPU-minutes) from 2026-12-02.
SHIPPED_MODEL = "piano-pretrained"
SHIPPED_MODEL_DIR = BUNDLED_MODELS_DIR / SHIPPED_MODEL
DEFAULT_DATASET_DIR = Path("runs") / "dataset"

"""The web app's help texts: what each control does, in the words of someone using it (a control's
tooltip in :mod:`chopinbot.app.layout`), with the bounds the library enforces."""

from __future__ import annotations

from chopinbot.app.settings import MAX_REQUEST_SECONDS, MAX_REQUEST_STATES, MAX_UPLOAD_BYTES
from chopinbot.compose.generate import DENSITY_RANGE, MIN_REGISTER_SPAN
from chopinbot.compose.repetition import CHOPIN_REPEAT_SPAN
from chopinbot.constants import SEED_STATES
from chopinbot.music.controls import LOUDNESS_LEVELS

HELP = {
    "model": "Which trained network composes. Only the models listed here can be chosen.",
    "seed_source": f"The music ChopinBot continues: a {SEED_STATES}-state window of a held-out piece "
                   "(one the model never trained on), or the last bars of your own MIDI file or score "
                   "(MusicXML, .mxl, Humdrum .krn).",
    "seeds_from": "Which held-out pieces the seed windows come from: those of the data this model was trained "
                  "on (a model fine-tuned on your own music starts from your own held-out pieces), or the "
                  "bundled Chopin test pieces.",
    "seed_index": "Which window of the held-out pieces to start from; the same index always gives the same seed.",
    "new_seed": "Pick another window at random (in the mode of the chosen key, if one is chosen).",
    "primer": f"A standard MIDI file (.mid) or a score (MusicXML .musicxml/.mxl/.xml, Humdrum .krn), at most "
              f"{MAX_UPLOAD_BYTES / 1024 / 1024:.0f} MB. Its last states become the seed, in its own key and "
              "metre; drums are ignored.",
    "primer_states": "How many of the primer's last states (chords or rests) ChopinBot listens to.",
    "infill": "Instead of continuing your file, compose a span inside it anew, one that leads into what follows: "
              "several spans are composed and the one under which the model finds the piece's real continuation "
              "likeliest is kept. The piece keeps its key and tempo, the span its length.",
    "infill_unit": "Give the span in seconds from the file's start, or in bars (bar 1 starts the file; bar lengths "
                   "from its time signatures, 4/4 without one).",
    "infill_start": "Where the span starts (moved to the nearest note boundary); some music must come before it.",
    "infill_end": "Where the span ends (moved to the nearest note boundary); in bars, it runs up to the start of "
                  "this bar (3 to 5 = bars 3 and 4). Some music must come after it.",
    "infill_candidates": f"How many spans are composed (in one batch) to choose from: more give a better join and "
                         f"take longer. The span's states times the candidates may be at most "
                         f"{MAX_REQUEST_STATES:,}.",
    "length_unit": "Say how long the new music should be in seconds, or in states (one state = one chord "
                   "or rest, a fraction of a beat to a few beats).",
    "seconds": f"Seconds of new music (the server composes at most {MAX_REQUEST_SECONDS:g} s per request).",
    "states": f"States of new music (at most {MAX_REQUEST_STATES:,} per request).",
    "form": "Compose the new music as a piece in a form: ABA (the opening, a contrasting middle in another key "
            "area, then the opening again) or AABA. The length is the whole piece's, and it ends on a cadence. "
            "Free = a plain continuation.",
    "decoding": "Sampling draws every key from its probability (varied, sometimes surprising); "
                "a threshold plays every key whose probability reaches it (the original app's way: "
                "repeatable, but it soon goes round in circles: the same few chords again and again).",
    "temperature": "Below 1: safer, more predictable; above 1: wilder.",
    "notatable": "Compose only rhythms that the engraved score can write as they are (within each beat, all on "
                 "the sixteenth or all on the triplet grid). Off, about 1 note in 100 is written a 48th of a beat "
                 "from where it sounds; on, the model copies fewer passages of its seed and sounds a little less "
                 "like Chopin (realism test 0.85 against 0.83).",
    "chopin_runs": "Stop a chord struck again and again (or a short figure going round) where Chopin's longest such "
                   "run stops: one chord 12 times in a row, two chords alternating 18 states. Off, only the loop "
                   "breaker's 48 states stop one.",
    "listen": "Before composing, the model's note head learns the primer (the context and seed, up to 512 "
              "states): its chords and voicings. It predicts real music better so, but did not sound more like Chopin.",
    "key_min_p": "A key that is not sounding may start only if its probability is at least this fraction of the "
                 "likeliest such key's: higher = fewer stray notes, 0 = off.",
    "key_local_p": "A key that is not sounding may start only if its probability is at least this fraction of the "
                   "likeliest such key within a few semitones of it: every register keeps its own likeliest "
                   "notes (so the bass goes on under the melody), while near-miss wrong notes are cut. 0 = off.",
    "repeat_boost": "How readily a passage heard before (in the seed or the new music) goes on as it went: the "
                    "odds of that continuation are multiplied by this. Chopin repeats figures and motifs; at 1 "
                    "the model seldom does. Higher = more repetition.",
    "repeat_passes": "How many times in a row the repetition above helps a passage (a figure or a phrase) go "
                     "round again; after that the model alone decides. No Chopin piece plays a phrase three times "
                     "in a row; without a limit the boost took some round eight times, and kept a chord struck "
                     "again and again for 20 s. 0 = no limit.",
    "repeat_span": "For how many states in a row the repetition above helps a passage heard before go on as it "
                   "went; after that the model alone decides. Helped all the way, the continuation of a primer "
                   f"with a reprise may play a whole minute of it back; {CHOPIN_REPEAT_SPAN} states is longer "
                   "than 97 % of Chopin's "
                   "own repeats. 0 = no limit.",
    "threshold": "A key sounds when its probability is at least this. Lower = more notes. "
                 "The threshold guide below shows the trade-off; the default is the value that was best "
                 "on held-out pieces.",
    "key": "Transpose the result into this key. A major seed cannot become minor by transposition: "
           "then the relative key is used (and said so).",
    "bpm": "Tempo of the result in beats per minute; empty = the seed's own tempo (over its last 16 beats, "
           "so a primer's closing ritardando does not slow it down).",
    "style": "Whose style to compose in. This model learnt several composers' piano music with a style input, "
             "and composes further in a style other than its own (Chopin) than its own prediction goes "
             "(style guidance 1): its Mozart is nearer real Mozart than real Chopin (docs/training-history.md).",
    "variations": f"Compose this many different continuations of the same seed at once (one batch), shown side by "
                  f"side to listen to and pick from. Together they may last at most {MAX_REQUEST_SECONDS:g} s "
                  f"({MAX_REQUEST_STATES:,} states), so longer pieces allow fewer variations.",
    "density": f"Steer the new music to this many notes per second ({DENSITY_RANGE[0]:g} to {DENSITY_RANGE[1]:g}; "
               "Chopin's two-bar passages mostly lie between 3 and 15). Empty = the model's choice. "
               "Needs a model with controls.",
    "steer_register": "Keep the new music between two pitches: the model is steered there, and keys outside are "
                      "never struck unless you untick the box below. Needs a model with controls.",
    "register": f"The lowest and highest pitch of the new music, in the output key (C4 = middle C), at least "
                f"{MIN_REGISTER_SPAN} semitones apart.",
    "confine_register": "Never strike a key outside the register. Untick to leave it to the model's steering "
                        "alone, which may stray.",
    "loudness": "Steer the dynamics: " + ", ".join(f"{m} (mean velocity {v})" for m, v in LOUDNESS_LEVELS.items())
                + ". The model's choice = not steered. Needs a model with controls.",
    "hold_key": "Steer the music to stay in its key (the chosen key, or the seed's). Untick to let it wander as "
                "the model likes. Needs a model with controls (others keep the seed's key by transposition only).",
    "random_seed": "The same random seed with the same settings gives the same piece again.",
    "fresh_seed": "Draw a new random seed each time you press Generate (untick to reproduce a piece).",
}

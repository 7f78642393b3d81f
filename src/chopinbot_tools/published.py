"""Published test figures for the frame-level benchmarks, each with its source, its kind and where
we read it.

``nll`` is in nats per frame, lower is better. ``kind`` says what the figure is:
``exact`` -- an exact negative log-likelihood (a model with a tractable
distribution over frames: independent keys, NADE, or the chain rule over keys);
``estimate`` -- the model's likelihood is intractable (RBM or DBN output) and
the figure is an estimate, e.g. by annealed importance sampling, neither exact
nor a guaranteed bound; ``bound`` -- a variational upper bound. ``acc`` is a
frame accuracy in % where one is quoted. ``read_in`` says where the figure was
read for this table and whether it was verified there. Verified (where read): the Bai et al. 2018 rows,
read in the paper's own text (Tables 1, 4 and 5; a text copy of arXiv:1803.01271 in the public code
index) and its code (locuslab/TCN, ``TCN/poly_music/music_test.py``). Not verified: every BL12 and
Johnson 2017 figure -- neither paper's table could be read here (the offline page store holds only the
opening of each paper's page, and no copy of their text was found), so they are carried over from the
earlier table of this project (issue 8), as marked.
"""

from __future__ import annotations

TITLES = {
    "piano-midi": "Piano-midi.de frame-level benchmark",
    "jsb-chorales": "JSB Chorales frame-level benchmark",
}

ISSUE_8 = ("not verified: carried over from issue 8's table; the paper's table could not be read here "
           "(only the opening of its page is stored, no copy of its text found)")
DATA_README = ("not verified: the data set's provenance notes (shared data README); BL12's table could not be "
               "read here")
BAI_T1 = "verified: Bai et al. 2018, Table 1 (paper text, read here)"


def _row(model: str, nll: float | None, source: str, kind: str = "exact", acc: float | None = None,
         read_in: str = ISSUE_8, note: str = "") -> dict:
    return {"model": model, "nll": nll, "acc": acc, "source": source, "kind": kind, "read_in": read_in,
            "note": note}


PUBLISHED: dict[str, list[dict]] = {
    "piano-midi": [
        _row("Random (all keys p = 0.5)", 61.00, "BL12", read_in="88 ln 2 = 61.00, computed"),
        _row("RNN (SGD)", 8.37, "BL12"),
        _row("MLP", 8.13, "Johnson 2017"),
        _row("RNN (Hessian-free)", 7.66, "BL12"),
        _row("Note N-gram", 7.50, "BL12"),
        _row("RTRBM", 7.36, "BL12", kind="estimate"),
        _row("LSTM-NADE", 7.36, "Johnson 2017"),
        _row("RNN-DBN", 7.15, "Johnson 2017", kind="estimate"),
        _row("RNN-RBM", 7.09, "BL12", kind="estimate", acc=28.9),
        _row("RNN-NADE", 7.05, "BL12"),
        _row("TP-LSTM-NADE", 5.44, "Johnson 2017"),
        _row("BALSTM (bi-axial LSTM)", 4.90, "Johnson 2017"),
        _row("Copy previous frame (accuracy only)", None, "BL12", acc=25.5),
    ],
    "jsb-chorales": [
        _row("Random (all keys p = 0.5)", 61.00, "BL12", read_in="88 ln 2 = 61.00, computed"),
        _row("RNN (tanh)", 8.91, "Bai 2018", read_in=BAI_T1,
             note="no RNN code in locuslab/TCN; presumably scored as their TCN (first frame left out)"),
        _row("LSTM", 8.45, "Bai 2018", read_in=BAI_T1,
             note="no RNN code in locuslab/TCN; presumably scored as their TCN (first frame left out)"),
        _row("GRU", 8.43, "Bai 2018", read_in=BAI_T1,
             note="no RNN code in locuslab/TCN; presumably scored as their TCN (first frame left out)"),
        _row("TCN", 8.10, "Bai 2018",
             read_in="verified: Bai et al. 2018, Tables 1, 4 and 5 (paper text, read here)",
             note="their code leaves out each chorale's first frame; 88 independent per-key Bernoulli outputs; "
                  "~300K parameters"),
        _row("RNN-NADE", 5.56, "BL12", read_in=DATA_README),
        _row("DBN-LSTM", 3.47, "Vohra 2015", kind="estimate",
             read_in="verified as quoted: Bai et al. 2018, Table 4 ('DBN+LSTM (Vohra et al., 2015)', the SoTA "
                     "column); Vohra et al.'s own paper not read",
             note="a DBN's likelihood is intractable; how it was estimated is not stated where we read it; "
                  "below our 5.86"),
    ],
}

SOURCES = {
    "BL12": "N. Boulanger-Lewandowski, Y. Bengio & P. Vincent, 'Modeling temporal dependencies in "
            "high-dimensional sequences: application to polyphonic music generation and transcription', ICML 2012, "
            "Table 1",
    "Johnson 2017": "D. D. Johnson, 'Generating polyphonic music using tied parallel networks', EvoMUSART 2017, "
                    "Table 1 (which also collects earlier published results)",
    "Bai 2018": "S. Bai, J. Z. Kolter & V. Koltun, 'An empirical evaluation of generic convolutional and recurrent "
                "networks for sequence modeling', arXiv:1803.01271, 2018, Tables 1 and 4",
    "Vohra 2015": "R. Vohra, K. Goel & J. K. Sahoo, 'Modeling temporal dependencies in data using a DBN-LSTM', "
                  "IEEE DSAA 2015",
}

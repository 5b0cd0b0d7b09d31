"""Errors in words: a validation's problems become one sentence, the same way in every engine."""

import pickle

from engines.errors import EngineError, ErrorKind, problems_sentence


def test_problems_read_as_one_sentence_with_or_without_a_lead():
    problems = ["width must be a multiple of 8 (got 65; try 64)", "steps must be between 1 and 150 (got 0)"]
    assert problems_sentence(problems, "Cannot make this image") == (
        "Cannot make this image: width must be a multiple of 8 (got 65; try 64); steps must be between 1 and 150 "
        "(got 0).")
    assert problems_sentence(["the prompt is empty", "use the GPU build"]) == "The prompt is empty; use the GPU build."


def test_an_error_crosses_a_process_boundary_with_its_kind_and_message():
    error = pickle.loads(pickle.dumps(EngineError(ErrorKind.BAD_INPUT, "The prompt is empty.")))
    assert (error.kind, error.message) == (ErrorKind.BAD_INPUT, "The prompt is empty.")
    assert error.kind == "bad_input"

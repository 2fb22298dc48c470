"""`errors.reason`: the one-line cause quoted in our error messages."""

from vtfpar_jax import errors


def test_reason_is_the_type_and_the_first_line():
    assert errors.reason(ValueError("bad value\nmore detail")) == "ValueError: bad value"


def test_reason_of_an_empty_message_is_the_type_alone():
    # torch.load of a 0-byte file raises EOFError() with no message
    assert errors.reason(EOFError()) == "EOFError"

"""Unit tier: locating the question's tokens in plain and chat-template prompts."""

import pytest
import torch
from tiny import tiny_model

from interp import PolylensError
from probes.features import question_features, question_spans


def test_plain_question_span_covers_all_but_bos():
    llama = tiny_model("llama")
    prompts, spans = question_spans(llama, ["La capitale", "Paris"], chat=False)
    assert prompts == ["La capitale", "Paris"]
    lengths = [len(ids) for ids in llama.tokenize(prompts)]
    assert spans == [(1, lengths[0]), (1, lengths[1])]  # token 0 is <bos>


def test_question_span_inside_a_template():
    llama = tiny_model("llama")
    llama.tokenizer.chat_template = (
        "{% for m in messages %}<bos>User says: {{ m['content'] }} | Assistant:{% endfor %}"
    )
    (prompt,), ((a, b),) = question_spans(llama, ["Paris"], chat=True)
    ids = llama.tokenize([prompt])[0]
    assert llama.tokenizer.decode(ids[a:b]).strip() == "Paris"
    assert b < len(ids)  # the template continues after the question


def test_last_and_mean_features():
    llama = tiny_model("llama")
    questions = ["La capitale", "Mji mkuu wa Ufaransa"]
    last = question_features(llama, questions, position="last")
    mean = question_features(llama, questions, position="mean")
    assert last.shape == mean.shape == (llama.n_layers, 2, llama.d_model)
    assert not torch.allclose(last, mean)
    with pytest.raises(PolylensError, match="unknown question position"):
        question_features(llama, questions, position="first")

import json

import pytest

from helpers import quiz

SECTIONS = sorted(p.stem for p in quiz.QUIZ_DIR.glob("*.json"))


def test_there_is_a_quiz_for_the_introduction():
    assert "00_introduction" in SECTIONS


@pytest.mark.parametrize("section", SECTIONS)
def test_every_quiz_file_is_valid(section):
    loaded = quiz.load(section)
    assert len(loaded.questions) >= 3
    for question in loaded.questions:
        assert question.explanation
        assert all(o.feedback for o in question.options)


def _single():
    return quiz.Question("q", "2 + 2?", [quiz.Option("4", True, "yes"),
                                          quiz.Option("5", False, "off by one")],
                         explanation="arithmetic")


def test_single_choice_feedback():
    question = _single()
    assert question.check() == "Pick an answer first."
    text = question.answer("5").check()
    assert text.startswith("Not quite.") and "off by one" in text and "arithmetic" in text
    assert not question.is_correct
    assert question.answer(0).check().startswith("Correct!")
    with pytest.raises(ValueError, match="one answer"):
        question.answer(0, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\], got 7"):
        question.answer(7)


def test_multiple_choice_needs_all_and_only_right_options():
    question = quiz.Question("m", "primes?", [quiz.Option("2", True, "prime"),
                                              quiz.Option("3", True, "prime"),
                                              quiz.Option("4", False, "2x2")],
                             type="multiple")
    assert not question.answer(0).is_correct
    assert not question.answer(0, 1, 2).is_correct
    assert question.answer(1, 0).is_correct


def test_invalid_questions_are_rejected():
    with pytest.raises(ValueError, match="exactly one correct"):
        quiz.Question("x", "?", [quiz.Option("a", True), quiz.Option("b", True)])
    with pytest.raises(ValueError, match="type must be"):
        quiz.Question("x", "?", [quiz.Option("a", True), quiz.Option("b")], type="essay")


def test_widget_works_headlessly():
    box = quiz.show("00_introduction")
    card = box.children[1]
    right = card.question.options[card.question.correct[0]].text
    wrong = next(o.text for o in card.question.options if not o.correct)
    card.chooser.value = wrong
    card.button.click()
    assert "Not quite" in card.feedback.value
    card.chooser.value = right
    card.button.click()
    assert "Correct" in card.feedback.value


def test_multiple_choice_widget_headlessly():
    box = quiz.show("00_introduction")
    card = next(c for c in box.children[1:] if c.question.type == "multiple")
    for i, checkbox in enumerate(card.chooser.children):
        checkbox.value = i in card.question.correct
    card.button.click()
    assert "Correct" in card.feedback.value


def test_text_version_where_widgets_cannot_render():
    box = quiz.show("00_introduction")
    text = box._repr_mimebundle_()["text/plain"]
    assert text.startswith("Quiz:") and "Q3." in text and "A)" in text
    key = quiz.load("00_introduction").as_text(answers=True)
    assert "Answer:" in key


def test_bad_quiz_files(tmp_path):
    with pytest.raises(ValueError, match="known sections"):
        quiz.load("99_nothing")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid quiz"):
        quiz.load(broken)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"title": "t", "questions": []}))
    with pytest.raises(ValueError, match="no questions"):
        quiz.load(empty)


def test_glossary_flash_cards_flip_and_move():
    box = quiz.flash_cards()
    assert len(box.cards) >= 30
    first = box.cards[0]
    assert first.term in box.face.value and first.definition not in box.face.value
    box.flip.click()
    assert first.definition in box.face.value
    box.next.click()
    assert box.index == 1 and box.cards[1].term in box.face.value and box.showing_term
    box.back.click()
    box.back.click()
    assert box.index == len(box.cards) - 1  # wraps around
    assert "Quantization:" in box._repr_mimebundle_()["text/plain"]


def test_glossary_covers_the_seed_terms():
    terms = {c.term for c in quiz.load_cards()}
    for needed in ("Pruning", "Quantization", "Knowledge distillation", "TinyML",
                   "Lottery ticket hypothesis", "Quantization-aware training (QAT)",
                   "Layer (operator) fusion", "Per-channel quantization"):
        assert needed in terms


def test_bad_glossary(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_text('{"cards": [{"term": "x"}]}')
    with pytest.raises(ValueError, match="not a valid glossary"):
        quiz.load_cards(bad)


def test_show_selected_questions():
    only = quiz.show("00_introduction", ids=["intro-2"])
    assert [c.question.id for c in only.children[1:]] == ["intro-2"]
    rest = quiz.show("00_introduction", exclude=["intro-2"])
    assert "intro-2" not in [c.question.id for c in rest.children[1:]]
    with pytest.raises(ValueError, match="no question"):
        quiz.show("00_introduction", ids=["nope"])


def _emoji(text: str) -> set[str]:
    """Characters from the symbol and emoji blocks (U+2600 and up, outside CJK and the
    private use area): Debian's chromium has no font for them and draws empty boxes."""
    return {c for c in text if 0x2600 <= ord(c) < 0x3000 or ord(c) >= 0x1F000}


@pytest.mark.parametrize("section", SECTIONS)
def test_quiz_text_has_no_emoji(section):
    box = quiz.show(section)
    shown = [box.children[0].value] + [c.children[0].value for c in box.children[1:]]
    for card in box.children[1:]:  # the feedback of every option, right and wrong
        for index in range(len(card.question.options)):
            shown.append(card.question.answer(index).check())
    shown.append(box._repr_mimebundle_()["text/plain"])
    assert not _emoji("\n".join(shown))

"""Pop-up quiz cells (every lesson ends a section with one).

Questions live in ``lessons/quizzes/<section>.json``::

    {"title": "Pruning", "questions": [
      {"id": "p1", "type": "single",            # or "multiple" (pick all that apply)
       "prompt": "What does magnitude pruning remove?",
       "options": [{"text": "The smallest weights", "correct": true,
                    "feedback": "Yes: small weights change the output least."}, ...],
       "explanation": "Shown after any answer: the idea behind the question."}]}

``show("01_pruning")`` displays one widget per question (radio buttons or checkboxes, a
*Check* button and feedback). Where widgets cannot render (a terminal, a static HTML export)
the cell's text output is the readable quiz. ``Question.answer(...)`` and ``Question.check()``
drive a question headlessly, which is how the tests (and an instructor's dry run) use it.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["QUIZ_DIR", "Option", "Question", "Quiz", "load", "Card", "load_cards", "flash_cards",
           "show"]

QUIZ_DIR = Path(__file__).resolve().parent.parent / "lessons" / "quizzes"


@dataclass
class Option:
    text: str
    correct: bool = False
    feedback: str = ""


@dataclass
class Question:
    """One question; ``answer`` selects options, ``check`` grades and returns feedback."""

    id: str
    prompt: str
    options: list[Option]
    type: str = "single"
    explanation: str = ""
    selected: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self):
        if self.type not in ("single", "multiple"):
            raise ValueError(f"question {self.id!r}: type must be 'single' or 'multiple', "
                             f"got {self.type!r}")
        right = sum(o.correct for o in self.options)
        if len(self.options) < 2 or right < 1 or (self.type == "single" and right != 1):
            raise ValueError(f"question {self.id!r} needs >= 2 options and exactly one correct "
                             f"answer (or >= 1 for 'multiple'); it has {len(self.options)} "
                             f"options, {right} correct")

    @property
    def correct(self) -> tuple[int, ...]:
        """Indices of the correct options."""
        return tuple(i for i, o in enumerate(self.options) if o.correct)

    def answer(self, *choices: int | str) -> "Question":
        """Select options by index or by their exact text."""
        indices = []
        for choice in choices:
            if isinstance(choice, str):
                texts = [o.text for o in self.options]
                if choice not in texts:
                    raise ValueError(f"{choice!r} is not an option of {self.id!r}: {texts}")
                choice = texts.index(choice)
            if not 0 <= choice < len(self.options):
                raise ValueError(f"option index must be in [0, {len(self.options) - 1}], "
                                 f"got {choice}")
            indices.append(choice)
        if self.type == "single" and len(indices) > 1:
            raise ValueError(f"question {self.id!r} takes one answer, got {len(indices)}")
        self.selected = tuple(sorted(set(indices)))
        return self

    @property
    def is_correct(self) -> bool:
        return bool(self.selected) and self.selected == self.correct

    def check(self) -> str:
        """Feedback for the current selection: verdict, per-option feedback, explanation."""
        if not self.selected:
            return "Pick an answer first."
        verdict = "Correct!" if self.is_correct else "Not quite."
        if not self.is_correct and self.type == "multiple":
            verdict += " (select every right option and no wrong one)"
        lines = [verdict] + [f"• {self.options[i].text}: {self.options[i].feedback}"
                             for i in self.selected if self.options[i].feedback]
        if self.explanation:
            lines.append(f"Why: {self.explanation}")
        return "\n".join(lines)

    def as_text(self, number: int = 1) -> str:
        kind = "pick one" if self.type == "single" else "pick all that apply"
        marks = "ABCDEFGH"
        lines = [f"Q{number}. {self.prompt} ({kind})"]
        lines += [f"   {marks[i]}) {o.text}" for i, o in enumerate(self.options)]
        return "\n".join(lines)


@dataclass
class Quiz:
    title: str
    questions: list[Question]

    def as_text(self, answers: bool = False) -> str:
        """The quiz as plain text; with ``answers=True`` the key follows each question."""
        parts = [f"Quiz: {self.title}"]
        for n, q in enumerate(self.questions, start=1):
            parts.append(q.as_text(n))
            if answers:
                parts.append("   Answer: " + ", ".join("ABCDEFGH"[i] for i in q.correct)
                             + (f". {q.explanation}" if q.explanation else ""))
        return "\n\n".join(parts)

    def widget(self):
        """An ipywidgets VBox with one interactive card per question."""
        import ipywidgets as widgets  # on use: the headless API and the grader never draw

        class QuizBox(widgets.VBox):  # its text form is the readable quiz, not "VBox(...)"
            def _repr_mimebundle_(box, **kwargs):
                bundle = super()._repr_mimebundle_(**kwargs) or {}
                bundle["text/plain"] = self.as_text()
                return bundle

        cards = [_question_card(q, n) for n, q in enumerate(self.questions, start=1)]
        return QuizBox([widgets.HTML(f"<h3>Quiz: {self.title}</h3>")] + cards)


def _question_card(question: Question, number: int):
    import ipywidgets as widgets  # on use: the headless API and the grader never draw

    labels = [o.text for o in question.options]
    if question.type == "single":
        chooser = widgets.RadioButtons(options=labels, value=None,
                                       layout=widgets.Layout(width="auto"))
        selected = lambda: [labels.index(chooser.value)] if chooser.value else []  # noqa: E731
    else:
        boxes = [widgets.Checkbox(description=t, value=False, indent=False,
                                  layout=widgets.Layout(width="auto")) for t in labels]
        chooser = widgets.VBox(boxes)
        selected = lambda: [i for i, b in enumerate(boxes) if b.value]  # noqa: E731
    button = widgets.Button(description="Check", button_style="primary")
    feedback = widgets.HTML()

    def on_click(_):
        indices = selected()
        if indices:
            question.answer(*indices)
        else:
            question.selected = ()
        feedback.value = "<br>".join(question.check().splitlines())

    button.on_click(on_click)
    kind = "pick one" if question.type == "single" else "pick all that apply"
    card = widgets.VBox([widgets.HTML(f"<b>Q{number}. {question.prompt}</b> <i>({kind})</i>"),
                         chooser, button, feedback],
                        layout=widgets.Layout(border="1px solid #ddd", padding="6px",
                                              margin="4px 0"))
    card.question, card.chooser, card.button, card.feedback = question, chooser, button, feedback
    return card


def load(section: str | Path) -> Quiz:
    """Read a quiz from ``lessons/quizzes/<section>.json`` (or from a path).

    Raises:
        ValueError: the file does not exist or is not a valid quiz (says what is wrong).
    """
    path = Path(section)
    if path.suffix != ".json":
        path = QUIZ_DIR / f"{section}.json"
    if not path.exists():
        known = sorted(p.stem for p in QUIZ_DIR.glob("*.json"))
        raise ValueError(f"no quiz file {path}; known sections: {known}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        questions = [Question(id=q["id"], prompt=q["prompt"], type=q.get("type", "single"),
                              explanation=q.get("explanation", ""),
                              options=[Option(**o) for o in q["options"]])
                     for q in raw["questions"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid quiz file: {type(error).__name__}: {error}") \
            from None
    if not questions:
        raise ValueError(f"{path} has no questions")
    return Quiz(raw.get("title", path.stem), questions)


@dataclass
class Card:
    term: str
    definition: str


def load_cards(path: str | Path = QUIZ_DIR.parent / "glossary.json") -> list[Card]:
    """Read glossary flash cards (``{"cards": [{"term": ..., "definition": ...}]}``)."""
    path = Path(path)
    try:
        cards = [Card(c["term"], c["definition"])
                 for c in json.loads(path.read_text(encoding="utf-8"))["cards"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid glossary: {type(error).__name__}: {error}") \
            from None
    if not cards:
        raise ValueError(f"{path} has no cards")
    return cards


def flash_cards(path: str | Path = QUIZ_DIR.parent / "glossary.json", shuffle_seed: int | None = 0):
    """A flash-card widget: a term; *Flip* shows its definition; *Next* / *Back* move on.

    The widget exposes ``cards``, ``index``, ``showing_term`` and its buttons (``flip``,
    ``next``, ``back``) so it can be driven headlessly. Its text form lists every card.
    """
    import ipywidgets as widgets  # on use: the headless API and the grader never draw

    cards = load_cards(path)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(cards)

    class CardBox(widgets.VBox):
        def _repr_mimebundle_(box, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs) or {}
            bundle["text/plain"] = "\n".join(f"{c.term}: {c.definition}" for c in cards)
            return bundle

    face = widgets.HTML(layout=widgets.Layout(min_height="90px", border="1px solid #ccc",
                                              padding="12px", width="95%"))
    counter = widgets.Label()
    buttons = {name: widgets.Button(description=name.capitalize())
               for name in ("back", "flip", "next")}
    box = CardBox([face, widgets.HBox([buttons["back"], buttons["flip"], buttons["next"],
                                       counter])])
    box.cards, box.index, box.showing_term, box.face = cards, 0, True, face
    box.flip, box.next, box.back = buttons["flip"], buttons["next"], buttons["back"]

    def render():
        card = cards[box.index]
        face.value = (f"<h3>{card.term}</h3><i>(press Flip)</i>" if box.showing_term
                      else f"<b>{card.term}</b><p>{card.definition}</p>")
        counter.value = f"card {box.index + 1} of {len(cards)}"

    def move(step):
        box.index, box.showing_term = (box.index + step) % len(cards), True
        render()

    def flip(_):
        box.showing_term = not box.showing_term
        render()

    buttons["flip"].on_click(flip)
    buttons["next"].on_click(lambda _: move(1))
    buttons["back"].on_click(lambda _: move(-1))
    render()
    return box


def show(section: str | Path, ids: list[str] | None = None, exclude: list[str] = ()):
    """The quiz of a section as an interactive widget (text where widgets cannot render).

    Args:
        section: ``lessons/quizzes/<section>.json`` (or a path to a quiz file).
        ids: Show only these questions, e.g. a "predict, then run" question before an
            experiment.
        exclude: Leave these questions out, e.g. one already asked earlier.
    """
    loaded = load(section)
    known = [q.id for q in loaded.questions]
    unknown = [i for i in list(ids or []) + list(exclude) if i not in known]
    if unknown:
        raise ValueError(f"no question {unknown} in {section!r}; its questions are {known}")
    chosen = [q for q in loaded.questions
              if (ids is None or q.id in ids) and q.id not in exclude]
    return Quiz(loaded.title, chosen).widget()

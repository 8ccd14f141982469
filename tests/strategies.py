"""Hypothesis strategies shared by the topic and policy property tests."""

from hypothesis import settings
from hypothesis import strategies as st

from mcpmqtt.rules.topics import filter_problem

FAST = settings(max_examples=300, deadline=None)

_LEVEL_TEXT = st.text(st.characters(exclude_characters="/+#", exclude_categories=["Cs", "Cc"]), max_size=3)
LITERAL = st.one_of(st.sampled_from(["a", "b", "", "$s", "$SYS"]), _LEVEL_TEXT)
FILL = st.one_of(st.sampled_from(["a", "b", "", "$s", "$SYS", "z", "é"]), _LEVEL_TEXT)
"""Levels to put where a filter has a wildcard; 'z' and random text stand for literals a filter lacks."""


def plain_filters(max_levels: int = 4) -> st.SearchStrategy[str]:
    """Valid non-shared filters: literal levels and '+', with or without a final '#'."""
    return st.builds(
        lambda levels, hash_last: "/".join([*levels, "#"] if hash_last else levels),
        st.lists(st.one_of(LITERAL, st.just("+")), max_size=max_levels),
        st.booleans(),
    ).filter(lambda text: filter_problem(text) is None)


@st.composite
def topic_matched_by(draw: st.DrawFn, topic_filter: str) -> str:
    """A topic that `topic_filter` matches: '+' by one drawn level, '#' by zero or more (the parent too)."""
    levels: list[str] = []
    for index, level in enumerate(topic_filter.split("/")):
        if level == "+":
            levels.append(draw(FILL))
        elif level == "#":
            levels.extend(draw(st.lists(FILL, min_size=1 if index == 0 else 0, max_size=3)))
        else:
            levels.append(level)
    if topic_filter[0] in "+#" and levels[0].startswith("$"):
        levels[0] = "not-dollar"  # a wildcard first level does not reach '$' topics
    return "/".join(levels)

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ttc.core import answers
from ttc.core.answers import answers_match, extract_answer, group_answers


@pytest.fixture(autouse=True)
def fresh_cache():
    # Each test should reach math-verify itself, not reuse a verdict from an earlier one.
    answers._equivalent.cache_clear()


EXTRACTION = [
    ("boxed_last_wins", r"First \boxed{1}, then \boxed{2}.", "2"),
    ("boxed_nested_braces", r"so \boxed{\frac{1}{2}} it is", r"\frac{1}{2}"),
    ("boxed_deeply_nested", r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
    ("boxed_set_braces", r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    ("fbox", r"hence \fbox{7}", "7"),
    ("boxed_beats_later_phrase", r"\boxed{4}. So the answer is 3", "4"),
    ("unclosed_box_falls_back", r"\boxed{2} and then \boxed{3", "2"),
    ("the_answer_is", "so the answer is 42", "42"),
    ("answer_colon", "Answer: 17", "17"),
    ("final_answer_colon", "Final answer: x+1", "x+1"),
    ("case_insensitive", "THE ANSWER IS 9", "9"),
    ("bold_value", "The answer is **42**.", "42"),
    ("bold_label", "**Answer:** 7", "7"),
    ("dollars_and_period", r"The answer is $\frac{3}{4}$.", r"\frac{3}{4}"),
    ("minerva_style", "Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("last_phrase_wins", "Answer: 1\nWait, that is wrong.\nAnswer: 2", "2"),
    ("phrase_ends_at_line_end", "The answer is 6\nbecause 2 * 3 = 6 and 10 > 6", "6"),
    ("prose_is_not_a_phrase", "the answer depends on n, which is 5", "5"),
    ("last_number", "3 apples and 4 pears make 7 fruit", "7"),
    ("negative", "so x = -7", "-7"),
    ("unicode_minus", "so x = \u22127", "-7"),
    ("subtraction_is_not_a_sign", "5-3", "3"),
    ("decimal", "it is about 3.75 m long", "3.75"),
    ("sentence_period_not_decimal", "The total is 15.", "15"),
    ("thousands_separators", "it costs 1,000,000 dollars", "1000000"),
    ("list_is_not_thousands", "the roots are 1,2,3", "3"),
    ("simple_fraction", "so 3/4 of the class", "3/4"),
    ("no_answer", "no numbers here", None),
    ("answer_on_the_next_line", "So the answer is:\n42", "42"),  # was ":", which could win a vote
    ("phrase_with_nothing_after", "so the answer is:", None),
    ("equation_gives_its_result", "the final answer is 40 * 48 = 216", "216"),  # votes with "216"
    ("named_value", "Answer: x = 5", "5"),
    ("inequality_is_kept_whole", "the answer is x <= 3", "x <= 3"),
    ("empty", "", None),
]


@pytest.mark.parametrize("text,expected", [row[1:] for row in EXTRACTION], ids=[row[0] for row in EXTRACTION])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


EQUIVALENT = [
    ("frac_vs_decimal", r"\frac{1}{2}", "0.5"),
    ("slash_vs_frac", "1/2", r"\frac{1}{2}"),
    ("decimal_vs_slash", "0.5", "1/2"),
    ("dfrac_vs_short_frac", r"\dfrac{3}{4}", r"\frac34"),
    ("negative_frac_vs_decimal", r"-\frac{1}{2}", "-0.5"),
    ("sqrt_over_2", r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
    ("simplified_surd", r"3\sqrt{2}", r"\sqrt{18}"),
    ("expanded_polynomial", "x^2+2x+1", "(x+1)^2"),
    ("power_of_ten", "10^{3}", "1000"),
    ("integer_vs_float", "2", "2.0"),
    ("unit_text", r"5\text{ cm}", "5"),
    ("squared_unit", r"5\text{ cm}^2", "5"),
    ("interval_spacing", "(0, 1]", "(0,1]"),
    ("left_right", r"\left(0, 1\right]", "(0,1]"),
    ("unicode_minus", "-3", "\u22123"),
    ("percent_vs_fraction", r"50\%", "0.5"),
    ("thousands_comma", "1,000", "1000"),
    ("latex_thousands_comma", "1{,}000", "1000"),
    ("math_dollars", r"$\frac{1}{2}$", "0.5"),
    ("escaped_dollar_currency", r"\$18", "18"),
    ("trailing_period", "12.", "12"),
    ("set_order", r"\{1,2,3\}", r"\{3,2,1\}"),
    ("multiple_choice_text", r"\text{(C)}", "C"),
]

NOT_EQUIVALENT = [
    ("different_integers", "2", "3"),
    ("different_fractions", r"\frac{1}{2}", r"\frac{1}{3}"),
    ("open_vs_closed_interval", "(0,1]", "[0,1]"),
    ("closed_vs_open_interval", "[0,1]", "(0,1]"),
    ("half_open_vs_open", "(0,1]", "(0,1)"),
    ("sign", "-3", "3"),
    ("pi_is_not_its_approximation", r"\pi", "3.14159"),
    ("rounded_third", "0.33", r"\frac13"),
    ("list_is_not_a_number", "1,2", "12"),
    ("different_words", r"\text{Monday}", r"\text{Tuesday}"),
]

GARBAGE = [
    ("unbalanced_braces", "}}{{\\frac{", "2"),
    ("open_frac", "\\frac{", "\\frac{1}{"),
    ("open_braces", "{{{{{{", "2"),
    ("open_root", "\\sqrt[", "1"),
    ("both_empty", "", ""),
    ("only_delimiters", "   ", "$$"),
    ("control_characters", "\x00\x01\x02", "1"),
    ("very_long", "a" * 5000, "b"),
]


def _rows(table):
    return pytest.mark.parametrize("a,b", [row[1:] for row in table], ids=[row[0] for row in table])


@_rows(EQUIVALENT)
def test_equivalent(a, b):
    assert answers_match(a, b)
    assert answers_match(b, a)


@_rows(NOT_EQUIVALENT)
def test_not_equivalent(a, b):
    assert not answers_match(a, b)
    assert not answers_match(b, a)


@_rows(GARBAGE)
def test_garbage_is_no_match_and_never_raises(a, b):
    assert answers_match(a, b) is False


@pytest.mark.parametrize("a,b", [(None, "1"), ("1", None), (1, "1")], ids=["none_left", "none_right", "not_a_string"])
def test_non_strings_are_no_match(a, b):
    assert answers_match(a, b) is False


def test_works_off_the_main_thread():
    # The engine checks answers on a background thread, where SIGALRM cannot be used.
    pairs = [(r"\frac{7}{8}", "0.875", True), (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
             ("(0,1]", "[0,1]", False), (r"\dfrac{3}{4}", "0.75", True)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: answers_match(p[0], p[1]), pairs))
    assert results == [expected for _, _, expected in pairs]


def test_runaway_sympy_is_cut_off_and_the_checker_recovers(monkeypatch):
    # 10^{10^{10}} makes sympy compute a ten-billion-digit integer, in C code that
    # no in-process timeout can interrupt; the worker process is killed instead.
    monkeypatch.setattr(answers, "_CHECK_TIMEOUT_S", 1.0)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(answers_match("10^{10^{10}}", "1")))
    start = time.monotonic()
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result == [False]
    assert time.monotonic() - start < 10
    assert answers_match(r"\frac{5}{8}", "0.625")  # a fresh worker took over


GROUPS = [
    ("fractions_and_integers", ["1/2", "0.5", None, "2", r"\frac12", "2.0", "x"], [[0, 1, 4], [3, 5], [6]]),
    ("units_and_minus_signs", [r"5\text{ cm}", "5", "\u22125", "-5"], [[0, 1], [2, 3]]),
    ("intervals", ["(0,1]", "[0,1]", "(0, 1]"], [[0, 2], [1]]),
    ("all_none", [None, None], []),
    ("empty", [], []),
]


@pytest.mark.parametrize("given,expected", [row[1:] for row in GROUPS], ids=[row[0] for row in GROUPS])
def test_group_answers(given, expected):
    assert group_answers(given) == expected


@pytest.mark.parametrize("text, expected", [
    ("so the answer is not clear", None),
    ("the answer is indeed \\boxed{}", None),
    ("The answer is ultimately 18.", "18"),
    ("the answer is written in the answer", None),
    ("The answer is Monday.", "Monday"),
    ("The answer is (B).", "(B)"),
], ids=["not", "empty-box", "prose-before-number", "prose", "one-word", "choice"])
def test_prose_after_answer_is_not_taken_for_an_answer(text, expected):
    # Small models write such phrases; taken as answers they would split the vote.
    assert extract_answer(text) == expected

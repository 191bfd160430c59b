"""--help shows every flag's default, and never a meaningless "(default: None)"."""

import common


def test_help_shows_defaults_but_not_none():
    parser = common.make_data_parser("A script.", batch_size=None)
    parser.add_argument("--lr", type=float, help="peak learning rate (default: chosen by the "
                                                 "script)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the data")
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text
    assert "passes over the data (default: 10)" in text
    assert "random seed, for repeatable runs (default: 0)" in text
    assert "images per batch (default: chosen by the script; see above)" in text


def flag_error(parser, *words, capsys):
    """The one line argparse prints for a refused flag (it exits with status 2)."""
    try:
        parser.parse_args(list(words))
    except SystemExit as exit:
        assert exit.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    raise AssertionError(f"{words} were accepted")


def test_flags_out_of_range_are_one_line_each(capsys):
    parser = common.make_data_parser("A script.")
    # NumPy's seed stops at 2**32 - 1, and the scripts add the epoch to it.
    assert "must be below 2**31" in flag_error(parser, "--seed", str(2 ** 32), capsys=capsys)
    assert parser.parse_args(["--seed", str(2 ** 31 - 1)]).seed == 2 ** 31 - 1
    assert "cat is named twice" in flag_error(parser, "--classes", "cat,dog,cat", capsys=capsys)
    assert parser.parse_args(["--classes", "cat,dog"]).classes == ("cat", "dog")
    # --workers (03_data.py, benchmarks/benchmark.py): each is a whole process.
    parser.add_argument("--workers", type=common.worker_count, default=0)
    assert "must be at most 64, got 65" in flag_error(parser, "--workers", "65", capsys=capsys)
    assert "must be 0 or more" in flag_error(parser, "--workers", "-1", capsys=capsys)
    assert parser.parse_args(["--workers", "64"]).workers == 64

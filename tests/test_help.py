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

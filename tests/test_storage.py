"""Password redaction in storage and tracking URLs."""

from zoo_ext.storage import redact


def test_redact_hides_passwords_only() -> None:
    text = "python -m rl_zoo3.train --storage postgresql://bob:s3cr3t-Pw@db:5432/optuna -f logs"
    assert redact(text) == "python -m rl_zoo3.train --storage postgresql://bob:***@db:5432/optuna -f logs"
    assert redact("sqlite:///study.db and http://host:5000/x") == "sqlite:///study.db and http://host:5000/x"

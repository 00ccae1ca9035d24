"""The study id that ties a study to its MLflow parent run."""

from zoo_ext.study import study_uid


def test_study_uid_is_shared_by_workers_and_hides_passwords() -> None:
    assert study_uid("study.log", "s") == study_uid("study.log", "s")
    assert study_uid("study.log", "s") != study_uid("study.log", "t") != study_uid("other.log", "t")
    url = "postgresql://bob:s3cr3t@db/optuna"
    assert study_uid(url, "s") == study_uid("postgresql://bob:other@db/optuna", "s")  # password not part of it
    assert study_uid(None, "s") != study_uid(None, "s")

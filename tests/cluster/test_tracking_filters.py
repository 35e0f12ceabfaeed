"""User values (names, storage paths, run keys) enter MLflow filter strings through one helper that matches
them exactly, quotes, backslashes and LIKE wildcards included."""
import pytest

from adaptnet.cluster.tracking.store import client, find_or_create_run, find_run, search_exact


@pytest.mark.parametrize("key", ["plain/key", "it's", 'say "hi"', "both ' and \"", "back\\slash'", "100%_x", "a' or '1'='1"])
def test_run_keys_with_any_characters_are_found_exactly(tmp_path, key):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    decoy = find_or_create_run(tracking, "e", run_key=key.replace("'", "_").replace('"', "_") + "x", run_name="d", params={})
    run_id = find_or_create_run(tracking, "e", run_key=key, run_name="r", params={})
    mlflow = client(tracking)
    experiment = mlflow.get_experiment_by_name("e").experiment_id
    assert run_id != decoy and find_run(mlflow, experiment, key).info.run_id == run_id
    assert find_or_create_run(tracking, "e", run_key=key, run_name="r", params={}) == run_id  # found again
    assert [r.info.run_id for r in search_exact(mlflow, [experiment], {"attributes.run_name": "r"})] == [run_id]


def test_a_bare_postgresql_uri_is_a_tracking_store(postgres_server):
    """`--tracking-uri postgresql://…` passes the pre-flight and MLflow keeps runs in the real PostgreSQL."""
    from adaptnet.cluster.preflight import check_tracking_uri
    from adaptnet.cluster.tracking.store import resolve_tracking_uri

    store = postgres_server.create_database("direct").replace("postgresql+psycopg2://", "postgresql://")
    uri = resolve_tracking_uri(store)
    check_tracking_uri(uri)
    run_id = find_or_create_run(uri, "pg", run_key="it's", run_name="r", params={"a": "1"})
    assert find_or_create_run(uri, "pg", run_key="it's", run_name="r", params={"a": "1"}) == run_id


def test_a_sqlite_store_keeps_artifacts_beside_it_and_its_experiments_say_what_they_hold(tmp_path, monkeypatch):
    """Run from one folder with the store in another: artifacts go next to the database, not into ./mlruns;
    a new experiment is marked as model training and says what it holds."""
    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    store.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracking = f"sqlite:///{store / 'mlflow.db'}"
    run_id = find_or_create_run(tracking, "e", run_key="k", run_name="r", params={})
    mlflow = client(tracking)
    mlflow.log_text(run_id, "hello", "note.txt")
    assert (store / "mlruns" / run_id / "artifacts" / "note.txt").read_text() == "hello"
    assert not list(elsewhere.iterdir())
    experiment = mlflow.get_experiment_by_name("e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "arm" in experiment.tags["mlflow.note.content"]

"""Deploy: the runbook's apply and read_back run as real subprocesses, and every outcome is
journaled; without a [deploy] section the operator confirms by typing the stage."""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest
from helpers import ROOT, CliRun, deploying_runbook, record_report


def deploy_rows(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT flags_after, detail FROM cutover.journal WHERE action = 'deploy' ORDER BY id")
        return [{"flags_after": flags, **detail} for flags, detail in rows.fetchall()]


def to_stage_g(cutover: CliRun) -> None:
    assert cutover("migrate")[0] == 0
    record_report(cutover.database_url, "backfill", ok=True)
    record_report(cutover.database_url, "verify", ok=True, stage="B")


@pytest.fixture
def with_deploy(capsys, legacy_db_url, env_file, tmp_path):
    """The CLI on a runbook whose deploy commands the test chooses."""
    def make(apply: str, read_back: str = 'grep "^ACCOUNT_" "$CUTOVER_ENV_FILE.running"',
             timeout: float = 30) -> CliRun:
        runbook = deploying_runbook(tmp_path, apply=apply, read_back=read_back, timeout=timeout)
        return CliRun(capsys, legacy_db_url, env_file, runbook=runbook)
    return make


def test_a_promotion_runs_apply_then_read_back_streams_them_and_journals_both(cutover):
    to_stage_g(cutover)
    code, out, err = cutover("promote", "C", "--yes")
    assert (code, err) == (0, "")
    assert '$ cp "$CUTOVER_ENV_FILE" "$CUTOVER_ENV_FILE.running"' in out
    assert "  ACCOUNT_SCHEMA_V2_READS=true" in out  # the read back's own output, streamed
    assert out.rstrip().endswith("(read back); journal entry 3.")
    [row] = deploy_rows(cutover.database_url)
    assert row["flags_after"] == {"reads": True, "writes": False, "dual_write": False}
    assert row["outcome"] == "deployed" and row["how"] == "read back"
    assert row["apply"]["exit_code"] == 0 and row["read_back"]["exit_code"] == 0
    assert row["apply"]["seconds"] >= 0 and "tail" not in row["apply"]  # output is kept only of a failure
    status = json.loads(cutover("status", "--json")[1])
    assert status["deployed"]["flags"] == row["flags_after"] and status["deploy_pending"] is False
    assert status["running"] == row["flags_after"]


def test_status_reads_back_what_runs_now_and_says_when_it_is_not_the_declared_flags(cutover):
    to_stage_g(cutover)
    cutover("promote", "C", "--yes")
    running = cutover.env_file.with_name(cutover.env_file.name + ".running")
    running.write_text(running.read_text().replace("V2_READS=true", "V2_READS=false"))  # a pod rolled back by hand
    code, out, _ = cutover("status")
    assert code == 0
    assert "running    READS=false WRITES=false DUAL_WRITE=false (read back now: NOT the declared flags)" in out
    assert "deployed   READS=true WRITES=false DUAL_WRITE=false (read back " in out


@pytest.mark.parametrize(("apply", "says"), [
    pytest.param("echo rollout failed: quota exceeded >&2; exit 3", "exited with code 3: rollout failed: quota "
                 "exceeded", id="failing"),
    pytest.param("./no-such-deploy-script", "exited with code 127 (command not found)", id="missing"),
    pytest.param("./deploy.sh", "exited with code 126 (not executable)", id="not executable"),
])
def test_a_failing_apply_is_one_sentence_and_the_flags_stay_declared_not_deployed(with_deploy, tmp_path, apply,
                                                                                   says):
    (tmp_path / "deploy.sh").write_text("#!/bin/sh\nexit 0\n")  # without its x bit
    cutover = with_deploy(apply)
    to_stage_g(cutover)
    code, out, err = cutover("promote", "C", "--yes")
    assert code == 1 and "Written" in out
    assert err.startswith(f"cutover: The deploy's apply command `{apply}` {says}")
    assert err.rstrip().endswith("the flags are declared but not deployed: fix it and run deploy again.")
    assert err.count("\n") == 1
    [row] = deploy_rows(cutover.database_url)
    assert row["outcome"] == "apply failed" and row["flags_after"] is None and "read_back" not in row
    status = json.loads(cutover("status", "--json")[1])
    assert status["deploy_pending"] is True
    assert "run deploy" in cutover("status")[1]
    record_report(cutover.database_url, "verify-reads", ok=True)
    code, _, err = cutover("promote", "D", "--yes")
    assert code == 1 and "have no deployment on record" not in err and "run deploy again" in err


def test_an_apply_past_its_timeout_is_stopped_with_everything_it_started(with_deploy, tmp_path):
    marker = tmp_path / "child.pid"
    cutover = with_deploy(f"sleep 300 & echo $! > {marker}; wait", timeout=1)
    to_stage_g(cutover)
    started = time.monotonic()
    code, _, err = cutover("promote", "C", "--yes")
    assert time.monotonic() - started < 20
    assert code == 1 and "did not finish within 1 s and was stopped" in err
    child = int(marker.read_text())
    for _ in range(50):  # the whole process group was killed, the backgrounded sleep too
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the apply command's child outlived the timeout")
    assert deploy_rows(cutover.database_url)[0]["apply"]["timed_out"] is True


@pytest.mark.parametrize(("read_back", "says"), [
    pytest.param("echo 'ACCOUNT_SCHEMA_V2_READS=true'; echo 'pod/ternent-api-7d9 restarted'",
                 "printed a line that is not KEY=VALUE: 'pod/ternent-api-7d9 restarted'", id="garbage"),
    pytest.param("true", "printed no KEY=VALUE line", id="nothing"),
    pytest.param("echo 'error: deployments.apps not found' >&2; exit 1", "exited with code 1: error: "
                 "deployments.apps not found", id="failing"),
])
def test_a_read_back_that_cannot_be_read_leaves_what_runs_unknown(with_deploy, read_back, says):
    cutover = with_deploy("true", read_back)
    to_stage_g(cutover)
    code, _, err = cutover("promote", "C", "--yes")
    assert code == 1 and f"The deploy's read_back command `{read_back}` {says}" in err
    [row] = deploy_rows(cutover.database_url)
    assert row["outcome"] == "read back failed" and row["flags_after"] is None
    assert "UNKNOWN: the deploy at" in cutover("status")[1]


def test_an_apply_that_changes_nothing_is_caught_by_the_read_back(with_deploy, tmp_path):
    cutover = with_deploy("true", "echo ACCOUNT_SCHEMA_V2_READS=false")
    to_stage_g(cutover)
    code, _, err = cutover("promote", "C", "--yes")
    assert code == 1 and ("The apply command exited 0, but the API runs READS=false WRITES=false DUAL_WRITE=false "
                          "while the env file declares READS=true WRITES=false DUAL_WRITE=false") in err
    assert deploy_rows(cutover.database_url)[0]["outcome"] == "read back differs"
    assert "NOT the declared flags: run deploy" in cutover("status")[1]


def test_deploy_by_hand_re_runs_both_and_keeps_the_time_the_stage_began(cutover):
    to_stage_g(cutover)
    cutover("promote", "C", "--yes")
    code, out, _ = cutover("deploy")
    assert code == 0 and "Deployed: the API runs READS=true" in out
    first, second = deploy_rows(cutover.database_url)
    assert second["since"] == first["since"]  # when the first's apply started: the stage's clock runs on


def test_without_a_deploy_section_the_operator_confirms_by_typing_the_stage(capsys, legacy_db_url, env_file):
    cutover = CliRun(capsys, legacy_db_url, env_file, runbook=ROOT / "runbook.toml")
    to_stage_g(cutover)
    code, out, _ = cutover("promote", "C", "--yes")
    assert code == 0 and "then confirm with `cutover deploy --confirm C`" in out
    assert "have no deployment on record" in cutover("status")[1]
    code, _, err = cutover("deploy", "--confirm", "D")
    assert code == 2 and "Type the declared stage's name, C," in err
    assert deploy_rows(legacy_db_url) == []
    code, _, err = cutover("deploy")
    assert code == 2 and "The runbook has no [deploy] section" in err
    code, out, _ = cutover("deploy", "--confirm", "c")
    assert code == 0 and "confirmed by alice, not read back" in out
    [row] = deploy_rows(legacy_db_url)
    assert row["how"] == "confirmed by operator, not read back" and row["stage"] == "C"
    assert "(confirmed by operator, not read back" in cutover("status")[1]


def test_confirming_is_refused_where_a_deploy_reads_back(cutover):
    to_stage_g(cutover)
    code, _, err = cutover("deploy", "--confirm", "G")
    assert code == 2 and "run `cutover deploy` without --confirm" in err

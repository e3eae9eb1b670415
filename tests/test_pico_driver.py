"""The pico driver against simulated boards on real ptys: evaluations and every failure mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pico_support import FAST, bitstream, sim_boards

from conftest import Collector, wait_for
from radlogger.device import DeviceState
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.protocol import BITSTREAM_SIZE
from radlogger.devices.pico.simulator import N_SAMPLES, expected_fitness, expected_pulses
from radlogger.devices.pico.sources import Job, Result
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline


def _queued_device(pipeline: Pipeline, path: str, name: str = "pico0",
                   **kw: object) -> tuple[PicoDevice, Collector]:
    """A driver fed through its queue (farm mode, no farm device needed) plus a collector."""
    col = pipeline.add_endpoint(Collector(), [name])
    dev = pipeline.add_device(PicoDevice(name, port=path, farm=f"test-{id(pipeline)}",
                                         **{**FAST, **kw}))
    pipeline.start()
    wait_for(lambda: dev.ready_for_work, message="board ready")
    return dev, col


def test_evaluations_on_several_boards_give_the_known_counts(tmp_path: Path,
                                                             pipeline: Pipeline) -> None:
    col = pipeline.add_endpoint(Collector(), ["pico0", "pico1", "pico2"])
    expected = {}
    with sim_boards(tmp_path, 3) as boards:
        for i, b in enumerate(boards):
            d = tmp_path / f"bits{i}"
            d.mkdir()
            for j in range(2):
                data = bitstream(10 * i + j)
                (d / f"gen{j}.bin").write_bytes(data)
                expected[(f"pico{i}", f"gen{j}#0")] = expected_pulses(data)
            pipeline.add_device(PicoDevice(f"pico{i}", port=b.path, bitstreams=str(d), repeat=1,
                                           **FAST))
        pipeline.start()
        wait_for(lambda: all(d.state is DeviceState.FINISHED
                             for d in pipeline.devices.values()), message="all evaluated")
        assert pipeline.stop(5.0)
        assert pipeline.balanced()
        got = {(m.source, m.meta["evaluation"]): m for m in col.items}
        assert {k: m.value for k, m in got.items()} == expected
        for (name, _), m in got.items():
            board = boards[int(name[-1])]
            assert m.topic == f"{name}.pulses" and m.unit == "pulses"
            meta = m.meta
            assert meta["ok"] is True and meta["state"] == "pulsecount"
            assert meta["serial"] == board.serial  # from the by-id link name
            assert meta["port"] == board.path
            assert meta["upload_s"] > 0 and meta["upload_us"] > 0
            assert set(meta["flash_us"]) == {"init", "start", "open", "write", "close"}
        assert all(b.bytes_received == 2 * BITSTREAM_SIZE and b.watchdogs == 0 for b in boards)
        for d in pipeline.devices.values():
            assert isinstance(d, PicoDevice)
            assert d.evaluations == 2 and not d.failures and not d.bad_lines
            assert d.uploaded_bytes == 2 * BITSTREAM_SIZE


def test_wrong_size_bitstream_is_rejected_before_any_byte_is_sent(tmp_path: Path,
                                                                  pipeline: Pipeline) -> None:
    d = tmp_path / "bits"
    d.mkdir()
    (d / "a_short.bin").write_bytes(bitstream(1, BITSTREAM_SIZE - 1))
    (d / "b_long.bin").write_bytes(bitstream(2, BITSTREAM_SIZE + 512))
    (d / "c_good.bin").write_bytes(bitstream(3))
    col = pipeline.add_endpoint(Collector(), ["pico0"])
    with sim_boards(tmp_path, 1) as (board,):
        dev = pipeline.add_device(PicoDevice("pico0", port=board.path, bitstreams=str(d),
                                             repeat=1, **FAST))
        pipeline.start()
        wait_for(lambda: dev.state is DeviceState.FINISHED)
        pipeline.stop(5.0)
        failures = col.by_topic("pico0.failure")
        assert [(m.value, m.meta["evaluation"], m.meta["size"]) for m in failures] == [
            ("wrong_size", "a_short#0", BITSTREAM_SIZE - 1),
            ("wrong_size", "b_long#0", BITSTREAM_SIZE + 512)]
        assert all(m.meta["ok"] is False for m in failures)
        assert [m.value for m in col.by_topic("pico0.pulses")] == [expected_pulses(bitstream(3))]
        # the board saw exactly one transfer: the good bitstream, and nothing else
        assert board.transfers == 1 and board.bytes_received == BITSTREAM_SIZE
        assert dev.failures == {"wrong_size": 2} and dev.uploaded_bytes == BITSTREAM_SIZE


def test_watchdog_timeout_is_a_failed_evaluation_and_the_board_goes_on(
        tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, watchdog=0.1) as (board,):
        dev, col = _queued_device(pipeline, board.path, watchdog=0.1)
        results: list[Result] = []
        board.stall_after(5000)
        assert dev.queue is not None
        dev.queue.put([Job("lost", bitstream(1), results.append),
                       Job("fine", bitstream(2), results.append)])
        wait_for(lambda: len(results) == 2)
        assert [(r.eval_id, r.ok, r.reason) for r in results] == [
            ("lost", False, "watchdog"), ("fine", True, "")]
        assert results[0].meta["bytes_received"] == 5000
        assert results[1].value == expected_pulses(bitstream(2))
        assert board.watchdogs == 1 and dev.failures == {"watchdog": 1}
        assert dev.state is DeviceState.RUNNING and board.opens == 1  # never re-opened
        pipeline.stop(5.0)
        assert [m.value for m in col.by_topic("pico0.failure")] == ["watchdog"]
        assert pipeline.snapshot()["producers"]["pico0"]["errors"] >= 1


def test_garbage_lines_are_counted_and_a_garbled_result_fails_the_evaluation(
        tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1) as (board,):
        dev, col = _queued_device(pipeline, board.path)
        board.inject("\x15\x80 line noise")
        board.inject("pulses: twelve")
        wait_for(lambda: dev.bad_lines["garbage"] == 2)
        results: list[Result] = []
        board.corrupt_next_result("pul$es: 19??")
        assert dev.queue is not None
        dev.queue.put([Job("garbled", bitstream(1), results.append),
                       Job("clean", bitstream(2), results.append)])
        wait_for(lambda: len(results) == 2)
        assert [(r.eval_id, r.reason) for r in results] == [("garbled", "no_result"),
                                                            ("clean", "")]
        assert dev.bad_lines["garbage"] == 3 and dev.failures == {"no_result": 1}
        assert dev.state is DeviceState.RUNNING
        pipeline.stop(5.0)
        snap = pipeline.snapshot()["producers"]["pico0"]
        assert snap["errors"] == 4  # 3 garbage lines + 1 failed evaluation
        assert pipeline.balanced()


def test_unplug_mid_evaluation_fails_it_and_the_board_is_reopened_when_back(
        tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, count_window=30.0) as (board,):
        dev, col = _queued_device(pipeline, board.path)
        results: list[Result] = []
        assert dev.queue is not None
        dev.queue.put([Job("unplugged", bitstream(1), results.append)])
        wait_for(lambda: board.bytes_received == BITSTREAM_SIZE, message="board counting")
        board.disconnect()
        wait_for(lambda: results, message="failure reported")
        assert (results[0].ok, results[0].reason) == (False, "disconnected")
        wait_for(lambda: dev.state is DeviceState.BACKOFF or dev.backoff.attempts >= 2)
        board.count_window = 0.02
        board.reconnect()
        wait_for(lambda: dev.ready_for_work, message="re-opened after the board came back")
        dev.queue.put([Job("after", bitstream(2), results.append)])
        wait_for(lambda: len(results) == 2)
        assert results[1].ok and results[1].value == expected_pulses(bitstream(2))
        assert board.opens == 2 and dev.failures == {"disconnected": 1}
        pipeline.stop(5.0)
        assert [m.meta["evaluation"] for m in col.by_topic("pico0.failure")] == ["unplugged"]
        assert [m.meta["evaluation"] for m in col.by_topic("pico0.pulses")] == ["after"]


def test_board_announcing_disconnect_is_reopened(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1) as (board,):
        dev, _ = _queued_device(pipeline, board.path)
        board.inject("USB Disconnected :(")
        wait_for(lambda: board.opens == 2 and dev.ready_for_work, message="re-opened")
        assert "USB Disconnected" in dev.last_error
        assert pipeline.producers["pico0"].errors == 1 and not dev.failures  # nothing in flight
        pipeline.stop(5.0)


def test_variance_firmware_publishes_the_fitness(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, mode="variance") as (board,):
        dev, col = _queued_device(pipeline, board.path, firmware="variance")
        results: list[Result] = []
        assert dev.queue is not None
        dev.queue.put([Job(f"v{i}", bitstream(i), results.append) for i in range(3)])
        wait_for(lambda: len(results) == 3)
        pipeline.stop(5.0)
        got = col.by_topic("pico0.variance")
        assert [m.value for m in got] == pytest.approx([expected_fitness(bitstream(i))
                                                        for i in range(3)])
        assert all(m.meta["n_samples"] == N_SAMPLES and m.meta["state"] == "variance"
                   for m in got)


def test_failed_flash_step_fails_the_evaluation(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1) as (board,):
        dev, col = _queued_device(pipeline, board.path)
        results: list[Result] = []
        board.fail_flash("open")
        assert dev.queue is not None
        dev.queue.put([Job("bad", bitstream(1), results.append),
                       Job("ok", bitstream(2), results.append)])
        wait_for(lambda: len(results) == 2)
        assert results[0].reason == "flash_failed" and "open" in results[0].meta["detail"]
        assert results[0].meta["flash_us"]["open"] == -1
        assert results[0].meta["pulses"] == expected_pulses(bitstream(1))
        assert results[1].ok
        pipeline.stop(5.0)


def test_no_result_in_time_fails_and_reopens(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, count_window=30.0) as (board,):
        dev, _ = _queued_device(pipeline, board.path, result_timeout=0.1)
        results: list[Result] = []
        assert dev.queue is not None
        dev.queue.put([Job("slow", bitstream(1), results.append)])
        wait_for(lambda: results)
        assert results[0].reason == "timeout"
        wait_for(lambda: board.opens == 2 and dev.ready_for_work, message="re-opened")
        assert "no result" in dev.last_error
        pipeline.stop(5.0)


def test_stop_during_an_evaluation_reports_it(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, count_window=30.0) as (board,):
        dev, col = _queued_device(pipeline, board.path)
        assert dev.queue is not None
        dev.queue.put([Job("cut", bitstream(1))])
        wait_for(lambda: board.bytes_received == BITSTREAM_SIZE)
        assert pipeline.stop(5.0)
        assert [(m.value, m.meta["evaluation"]) for m in col.items] == [("shutdown", "cut")]
        assert dev.failures == {"shutdown": 1}
        assert pipeline.snapshot()["producers"]["pico0"]["errors"] == 0  # a stop is no error


@pytest.mark.parametrize("kw, key", [
    ({}, "port"),
    ({"port": "/dev/ttyACM0", "serial": "E6614C311B8E2F2A"}, "port"),
    ({"port": "/dev/ttyACM0", "baudrate": 1200}, "baudrate"),
    ({"port": "/dev/ttyACM0", "bitstreams": "/nonexistent/bits"}, "bitstreams"),
    ({"port": "/dev/ttyACM0", "bitstreams": "/", "farm": "f"}, "bitstreams"),
    ({"port": "/dev/ttyACM0", "firmware": "blinky"}, "firmware"),
])
def test_configuration_errors_name_the_option(kw: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as err:
        PicoDevice("pico0", **kw)
    assert err.value.key == key and "\n" not in str(err.value)


def test_missing_port_is_retried_with_backoff(tmp_path: Path, pipeline: Pipeline) -> None:
    dev = pipeline.add_device(PicoDevice("pico0", port=str(tmp_path / "nothing"), **FAST))
    pipeline.start()
    wait_for(lambda: dev.backoff.attempts >= 2 or pipeline.producers["pico0"].errors >= 2)
    assert "connect failed" in dev.last_error
    pipeline.stop(5.0)


def test_unplugging_an_idle_board_is_noticed(tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1) as (board,):
        dev, _ = _queued_device(pipeline, board.path)
        board.disconnect()
        wait_for(lambda: pipeline.producers["pico0"].errors >= 1, message="loss noticed")
        assert not dev.failures  # nothing was being evaluated
        board.reconnect()
        wait_for(lambda: dev.ready_for_work and board.opens == 2)
        pipeline.stop(5.0)

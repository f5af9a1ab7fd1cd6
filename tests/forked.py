"""Running a test body in a forked child process (shared by the store's fault and thread tests)."""

import functools
import multiprocessing
import os
import traceback

import pytest


def isolated(timeout=20):
    """Runs the test body in a forked child process: a fault armed there stays there, and a
    store that deadlocks fails the test after `timeout` seconds instead of hanging the suite."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            ctx = multiprocessing.get_context("fork")
            r, w = ctx.Pipe(duplex=False)

            def child():
                try:
                    fn(*args, **kwargs)
                    w.send(None)
                except BaseException:
                    w.send(traceback.format_exc())
                finally:
                    w.close()
                    os._exit(0)

            p = ctx.Process(target=child)
            p.start()
            w.close()
            if not r.poll(timeout):
                p.kill()
                p.join()
                pytest.fail(f"{fn.__name__} did not finish within {timeout} s: the store hung "
                            "(a deadlock after the injected fault?)", pytrace=False)
            try:
                result = r.recv()
            except EOFError:
                result = f"the child process died (exit code {p.exitcode}) without a result"
            p.join()
            if result is not None:
                pytest.fail(result, pytrace=False)
        return wrapper
    return deco

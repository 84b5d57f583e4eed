"""Running test work on several threads at once."""
import threading


def run_in_threads(work, n=8):
    """``[work(0), ..., work(n-1)]``, each on its own thread, all started together (a
    barrier); any exception fails the test, naming its thread."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(k):
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as e:   # reported below with the thread's number
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors)
    return results

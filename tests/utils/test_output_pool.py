"""OutputPool: memory of dropped outputs is reused, memory still in use never is."""

import gc
import threading

import torch

from mask2former.utils.output_pool import OutputPool

MB = 1 << 20


def test_dropped_output_memory_is_reused():
    pool = OutputPool(min_bytes=0)
    pool.begin_round()
    a = pool.empty((4, MB), torch.float32)
    ptr = a.data_ptr()
    assert a.shape == (4, MB) and a.dtype == torch.float32 and a.is_contiguous()
    del a
    assert pool.free_bytes() >= 16 * MB
    b = pool.empty((4, MB), torch.float32)
    assert b.data_ptr() == ptr and pool.free_bytes() == 0
    c = pool.empty((2, MB), torch.int64)  # same bytes, other dtype: fresh (b still in use)
    assert c.data_ptr() != ptr and c.dtype == torch.int64


def test_memory_in_use_through_a_view_or_numpy_is_never_reused():
    pool = OutputPool(min_bytes=0)
    a = pool.empty((8, 1000))
    a.fill_(1.0)
    view, arr = a[2:4], a[5].numpy()
    ptr = a.data_ptr()
    del a
    gc.collect()
    assert pool.free_bytes() == 0  # the view and the array still use it
    b = pool.empty((8, 1000))
    b.fill_(2.0)
    assert b.data_ptr() != ptr and bool((view == 1).all()) and bool((arr == 1).all())
    del view
    assert pool.free_bytes() == 0
    del arr
    assert pool.free_bytes() >= 8 * 1000 * 4
    assert pool.empty((8, 1000)).data_ptr() == ptr


def test_small_requests_and_far_larger_buffers_are_not_pooled():
    pool = OutputPool(min_bytes=MB)
    small = pool.empty((10,))
    del small
    assert pool.free_bytes() == 0
    assert OutputPool(min_bytes=0).empty((0, 5, 7)).shape == (0, 5, 7)  # empty: nothing to pool
    big = pool.empty((4 * MB,), torch.uint8)  # a 6 MB buffer (SLACK 1.5)
    ptr = big.data_ptr()
    del big
    assert pool.empty((MB,), torch.uint8).data_ptr() != ptr  # 6x too large: not used
    assert pool.empty((5 * MB,), torch.uint8).data_ptr() == ptr  # larger than the first, fits


def test_kept_memory_is_capped_by_the_latest_round():
    pool = OutputPool(min_bytes=0)
    pool.begin_round()
    outs = [pool.empty((MB,), torch.uint8) for _ in range(3)]
    del outs  # all three dropped: all kept (the round handed them out)
    assert pool.free_bytes() == 3 * 1.5 * MB
    pool.begin_round()
    one = pool.empty((MB,), torch.uint8)
    pool.begin_round()  # the last round handed out one buffer: keep at most that much
    assert pool.free_bytes() <= 1.5 * MB
    del one
    assert pool.free_bytes() <= 1.5 * MB
    pool.clear()
    assert pool.free_bytes() == 0


def test_threads_never_share_memory():
    pool = OutputPool(min_bytes=0)
    errors = []

    def work(value: float):
        for _ in range(200):
            t = pool.empty((256, 256))
            t.fill_(value)
            if not bool((t == value).all()):
                errors.append(value)

    threads = [threading.Thread(target=work, args=(float(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

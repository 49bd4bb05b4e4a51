use super::*;
use crate::AlignedBuf;

/// Naive reference for `free_group`: the first multiple of `pages` whose pages are all clear.
fn free_group_naive(used: u64, pages: u32) -> Option<u32> {
    (0..64)
        .step_by(pages as usize)
        .find(|&first| (first..first + pages).all(|i| used & (1u64 << i) == 0))
}

#[test]
fn free_group_matches_the_naive_search() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20_000 {
        // xorshift; every fourth word is made sparse so large groups are found too.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let used = match round % 4 {
            0 => x & (x >> 11) & (x >> 23),
            1 => 1u64 << (x % 64),
            2 => 0,
            _ => x,
        };
        for shift in 0..=6 {
            let pages = 1u32 << shift;
            assert_eq!(
                free_group(used, pages),
                free_group_naive(used, pages),
                "used {used:#x} pages {pages}"
            );
        }
    }
    assert_eq!(free_group(u64::MAX, 1), None);
    assert_eq!(free_group(0, 64), Some(0));
    assert_eq!(free_group(1 << 63, 64), None);
    assert_eq!(free_group(1, 32), Some(32));
}

#[test]
fn region_contains_only_whole_ranges() {
    let r = ArenaRegion {
        base: 0x20_0000,
        len: 0x20_0000,
    };
    assert!(r.contains(0x20_0000 as *const u8, 4096));
    assert!(r.contains(0x3f_f000 as *const u8, 4096));
    assert!(!r.contains(0x3f_f000 as *const u8, 4097));
    assert!(!r.contains(0x1f_f000 as *const u8, 4096));
    assert!(!r.contains(usize::MAX as *const u8, 2));
}

/// Runs `f` on a thread of its own (a fresh thread-local arena state).
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::spawn(f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[test]
fn without_an_arena_buffers_come_from_the_pool() {
    on_thread(|| {
        assert_eq!(enable_thread_arena(0), None);
        assert_eq!(thread_arena(), None);
        let b = AlignedBuf::zeroed(4096);
        assert_eq!(b.as_slice().len(), 4096);
    });
}

#[test]
fn buffers_are_cut_from_the_arena_until_it_is_full() {
    on_thread(|| {
        let region = enable_thread_arena(1).expect("an arena");
        assert_eq!(region.len(), ARENA_UNIT, "rounded up to a huge page");
        assert_eq!(region.base() as usize % ARENA_UNIT, 0, "huge-page aligned");
        assert_eq!(
            enable_thread_arena(4 << 20),
            Some(region),
            "a thread keeps its arena"
        );
        let mut bufs = Vec::new();
        for _ in 0..(ARENA_UNIT / (128 << 10)) {
            let mut b = AlignedBuf::for_overwrite(128 << 10);
            let p = b.as_mut_ptr();
            assert!(region.contains(p, 128 << 10));
            assert_eq!(p as usize % (128 << 10), 0, "size-aligned");
            b.as_mut_slice().fill(0xa5);
            bufs.push(b);
        }
        let misses = arena_misses();
        let mut outside = AlignedBuf::zeroed(4096);
        assert!(
            !region.contains(outside.as_mut_ptr(), 4096),
            "full: from the pool"
        );
        assert!(arena_misses() > misses);
        // Too large for an arena block: from the pool even with room.
        drop(bufs.pop());
        let mut big = AlignedBuf::zeroed(MAX_ARENA_BLOCK + 1);
        assert!(!region.contains(big.as_mut_ptr(), 1));
        // The freed 128 KiB holds a 4 KiB block now, which `zeroed` clears.
        let mut small = AlignedBuf::zeroed(4096);
        assert!(region.contains(small.as_mut_ptr(), 4096));
        assert!(small.as_slice().iter().all(|&b| b == 0));
        for b in &bufs {
            assert!(
                b.as_slice().iter().all(|&x| x == 0xa5),
                "blocks do not overlap"
            );
        }
    });
}

/// Drops `buf` on a thread of its own, as a buffer freed by another connection's thread.
fn drop_on_another_thread(buf: AlignedBuf) {
    std::thread::spawn(move || drop(buf))
        .join()
        .expect("dropped");
}

#[test]
fn a_block_dropped_on_another_thread_goes_back_to_its_arena() {
    on_thread(|| {
        let region = enable_thread_arena(2 << 20).expect("an arena");
        let block = 256 << 10;
        let mut all: Vec<AlignedBuf> = (0..8).map(|_| AlignedBuf::for_overwrite(block)).collect();
        assert!(all
            .iter_mut()
            .all(|b| region.contains(b.as_mut_ptr(), block)));
        let mut extra = AlignedBuf::for_overwrite(block);
        assert!(!region.contains(extra.as_mut_ptr(), 1), "the arena is full");
        drop_on_another_thread(all.pop().expect("eight blocks"));
        let mut again = AlignedBuf::for_overwrite(block);
        assert!(region.contains(again.as_mut_ptr(), block));
    });
}

#[test]
fn blocks_larger_than_a_word_take_whole_aligned_words() {
    on_thread(|| {
        // 4 MiB: room for four 1 MiB blocks, or three after a small block took a word.
        let region = enable_thread_arena(4 << 20).expect("an arena");
        let mut small = AlignedBuf::zeroed(4096);
        assert!(region.contains(small.as_mut_ptr(), 4096));
        let mut large: Vec<AlignedBuf> = (0..3u8)
            .map(|i| {
                let mut b = AlignedBuf::for_overwrite(MAX_ARENA_BLOCK);
                b.as_mut_slice().fill(i);
                b
            })
            .collect();
        let starts: Vec<usize> = large.iter_mut().map(|b| b.as_mut_ptr() as usize).collect();
        let inside = starts
            .iter()
            .filter(|&&p| region.contains(p as *const u8, MAX_ARENA_BLOCK))
            .count();
        assert_eq!(
            inside, 3,
            "the small block sits in the first 1 MiB, three more fit"
        );
        assert!(starts.iter().all(|p| p % MAX_ARENA_BLOCK == 0));
        for (i, b) in large.iter().enumerate() {
            assert!(b.as_slice().iter().all(|&x| usize::from(x) == i));
        }
        let mut full = AlignedBuf::for_overwrite(MAX_ARENA_BLOCK);
        assert!(
            !region.contains(full.as_mut_ptr(), 1),
            "no whole free 1 MiB left"
        );
        drop(small);
        let mut fourth = AlignedBuf::for_overwrite(MAX_ARENA_BLOCK);
        assert!(region.contains(fourth.as_mut_ptr(), MAX_ARENA_BLOCK));
        // Given back from another thread, the words are free again.
        drop_on_another_thread(large.pop().expect("three blocks"));
        let mut again = AlignedBuf::for_overwrite(MAX_ARENA_BLOCK);
        assert!(region.contains(again.as_mut_ptr(), MAX_ARENA_BLOCK));
    });
}

#[test]
fn an_ended_threads_arena_is_taken_by_the_next_thread() {
    // A size no other test uses, so no other thread adopts it in between.
    let size = 6 << 20;
    let first = on_thread(move || enable_thread_arena(size).expect("an arena"));
    let second = on_thread(move || enable_thread_arena(size).expect("an arena"));
    assert_eq!(first, second);
    assert!(arena_bytes() >= size);
}

#[test]
fn in_use_bytes_follow_the_blocks() {
    on_thread(|| {
        // A size of its own: the blocks of this arena are only this thread's.
        let region = enable_thread_arena(10 << 20).expect("an arena");
        let arena = OWNER.with(|o| o.0.get()).expect("the thread's arena");
        assert_eq!(arena.region, region);
        let a = AlignedBuf::for_overwrite(8192);
        let b = AlignedBuf::for_overwrite(100 << 10);
        assert_eq!(arena.in_use(), 8192 + (128 << 10));
        assert!(arena_bytes_in_use() >= 8192 + (128 << 10));
        drop((a, b));
        assert_eq!(arena.in_use(), 0);
    });
}

#[test]
fn random_takes_and_give_backs_never_overlap_and_fail_only_when_full() {
    // An arena of its own, driven directly (no thread ownership involved).
    let arena = create(4 << 20);
    let pages_total = arena.region.len() / PAGE;
    let mut owner = vec![usize::MAX; pages_total];
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let give_back = !live.is_empty() && (x.is_multiple_of(3) || live.len() > 40);
        if give_back {
            let (ptr, size) = live.swap_remove((x >> 8) as usize % live.len());
            let first = (ptr - arena.region.base) / PAGE;
            owner[first..first + size / PAGE].fill(usize::MAX);
            // SAFETY: a block this test took with this size and no longer uses.
            unsafe { arena.give_back(NonNull::new(ptr as *mut u8).expect("non-null"), size) };
            continue;
        }
        let size = PAGE << ((x >> 16) % 9); // 4 KiB .. 1 MiB
        let pages = size / PAGE;
        match arena.take(size) {
            Some(p) => {
                let ptr = p.as_ptr() as usize;
                assert!(arena.region.contains(p.as_ptr(), size));
                assert_eq!((ptr - arena.region.base) % size, 0, "aligned to its size");
                let first = (ptr - arena.region.base) / PAGE;
                let span = &mut owner[first..first + pages];
                assert!(
                    span.iter().all(|&o| o == usize::MAX),
                    "overlap in round {round}"
                );
                span.fill(round);
                live.push((ptr, size));
            }
            None => {
                let free_aligned = (0..pages_total)
                    .step_by(pages)
                    .any(|f| owner[f..f + pages].iter().all(|&o| o == usize::MAX));
                assert!(
                    !free_aligned,
                    "a free {size}-byte block was refused in round {round}"
                );
            }
        }
    }
    let in_use: usize = live.iter().map(|&(_, s)| s).sum();
    assert_eq!(arena.in_use(), in_use);
}

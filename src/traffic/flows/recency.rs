//! Values kept in order of last use: a slab of slots threaded on a doubly
//! linked list, least recently used at the front. Insert, touch (move to the
//! back), remove and "which is least recent" are O(1) and never hash, so the
//! flow table can evict its least recently active flow per packet without a
//! scan, and the order depends only on the calls made (deterministic).

/// No slot (end of the list, or an empty list).
const NIL: usize = usize::MAX;

struct Slot<T> {
    /// None while the slot is on the free list.
    value: Option<T>,
    prev: usize,
    next: usize,
}

/// A slot index is valid from `push_back` until `remove`; after that it may
/// be reused for another value, so callers drop it on removal.
pub struct RecencyList<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    /// Least recently used.
    head: usize,
    /// Most recently used.
    tail: usize,
    len: usize,
}

impl<T> Default for RecencyList<T> {
    fn default() -> Self {
        RecencyList {
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl<T> RecencyList<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a value as the most recently used; returns its slot.
    pub fn push_back(&mut self, value: T) -> usize {
        let slot = Slot {
            value: Some(value),
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.link_back(i);
        self.len += 1;
        i
    }

    /// Marks slot `i` as the most recently used (no-op for a free slot).
    pub fn touch(&mut self, i: usize) {
        if self.get(i).is_some() && self.tail != i {
            self.unlink(i);
            self.link_back(i);
        }
    }

    /// The least recently used slot.
    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head)
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i)?.value.as_ref()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.value.as_mut()
    }

    /// Takes the value out of slot `i` (None if the slot is free).
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let value = self.slots.get_mut(i)?.value.take()?;
        self.unlink(i);
        self.free.push(i);
        self.len -= 1;
        Some(value)
    }

    /// Every value, in slot order (not recency order).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    fn link_back(&mut self, i: usize) {
        self.slots[i].prev = self.tail;
        self.slots[i].next = NIL;
        match self.tail {
            NIL => self.head = i,
            t => self.slots[t].next = i,
        }
        self.tail = i;
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from least to most recently used, by walking the links.
    fn order(l: &RecencyList<char>) -> Vec<char> {
        let mut out = Vec::new();
        let mut i = l.head;
        while i != NIL {
            out.extend(l.get(i));
            i = l.slots[i].next;
        }
        out
    }

    #[test]
    fn touch_moves_to_the_back_and_remove_relinks() {
        let mut l = RecencyList::default();
        let a = l.push_back('a');
        let b = l.push_back('b');
        let c = l.push_back('c');
        assert_eq!(order(&l), ['a', 'b', 'c']);
        l.touch(a);
        assert_eq!(order(&l), ['b', 'c', 'a']);
        assert_eq!(l.front(), Some(b));
        assert_eq!(l.remove(c), Some('c'));
        assert_eq!(l.remove(c), None, "a removed slot is free");
        assert_eq!(order(&l), ['b', 'a']);
        // The freed slot is reused, at the back.
        let d = l.push_back('d');
        assert_eq!(d, c);
        assert_eq!(order(&l), ['b', 'a', 'd']);
        l.touch(d); // already last
        l.touch(99); // out of range: ignored
        assert_eq!(order(&l), ['b', 'a', 'd']);
        assert_eq!(l.remove(b), Some('b'));
        assert_eq!(l.remove(a), Some('a'));
        assert_eq!(l.remove(d), Some('d'));
        assert!(l.is_empty() && l.front().is_none());
        assert_eq!(l.iter().count(), 0);
    }
}

// Owns the intrusive job list: the kcopyd state machine keeps a job's state as the list it is
// on, so a job is on at most one list at a time (asserted). Pushing at either end (at the head:
// a job whose I/O a busy dm-io client refused goes back first in line), popping the head and
// removing from the middle (the I/O phase takes the first job that may go, past WRITE_SEQ
// writes and offloads that must wait) are O(1) and allocate nothing; a job that cannot go on
// stays in place. Splicing a whole list onto another's tail moves items one by one. Each list
// has a capacity: the client's job bound makes it finite.

import assert from '../assert.js';

/** The links a listed item carries. */
export interface JobLinks<T> {
  /** The list the item is on (compared by identity), or `null`. */
  list: object | null;
  /** The previous item on that list. */
  listPrev: T | null;
  /** The next item on that list. */
  listNext: T | null;
}

/** A bounded doubly linked list of items that carry their own links. */
export class JobList<T extends JobLinks<T>> {
  /** The list's name, for assertion messages. */
  readonly name: string;
  /** Most items the list may hold. */
  readonly capacity: number;
  #head: T | null = null;
  #tail: T | null = null;
  #length = 0;

  constructor(name: string, capacity: number) {
    assert.ok(Number.isSafeInteger(capacity) && capacity > 0);
    this.name = name;
    this.capacity = capacity;
  }

  /** Items on the list. */
  get length(): number {
    return this.#length;
  }

  /** The first item, or `null`. */
  get head(): T | null {
    return this.#head;
  }

  /** Appends `item`. */
  pushTail(item: T): void {
    this.#admit(item);
    item.listPrev = this.#tail;
    item.listNext = null;
    if (this.#tail === null) this.#head = item;
    else this.#tail.listNext = item;
    this.#tail = item;
  }

  /** Puts `item` first (a job the dm-io client refused as busy keeps its place in line). */
  pushHead(item: T): void {
    this.#admit(item);
    item.listPrev = null;
    item.listNext = this.#head;
    if (this.#head === null) this.#tail = item;
    else this.#head.listPrev = item;
    this.#head = item;
  }

  /** Removes and returns the first item, or `null` when empty. */
  popHead(): T | null {
    const item = this.#head;
    if (item !== null) this.remove(item);
    return item;
  }

  /** Removes `item`, which must be on this list. */
  remove(item: T): void {
    if (item.list !== this) assert.fail(`${this.name}: removing an item that is not on the list`);
    if (item.listPrev === null) this.#head = item.listNext;
    else item.listPrev.listNext = item.listNext;
    if (item.listNext === null) this.#tail = item.listPrev;
    else item.listNext.listPrev = item.listPrev;
    item.list = null;
    item.listPrev = null;
    item.listNext = null;
    this.#length -= 1;
    assert.ok(this.#length >= 0);
  }

  /** Moves every item, in order, to the tail of `other`. */
  spliceTo(other: JobList<T>): void {
    for (let item = this.popHead(); item !== null; item = this.popHead()) other.pushTail(item);
  }

  #admit(item: T): void {
    if (item.list !== null) assert.fail(`${this.name}: the item is already on a list`);
    if (this.#length >= this.capacity) {
      assert.fail(`${this.name}: more than ${this.capacity} items`);
    }
    item.list = this;
    this.#length += 1;
  }
}

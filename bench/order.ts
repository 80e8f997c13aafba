// Owns the order in which a case's variants run. On this VM the position of a run decides much
// of its speed: the first run after a pause allocates memory the host has taken back (up to 5x
// slower), and later runs inherit the earlier ones' dirty pages and JIT-warm processes. Every
// workload therefore runs the odd repetitions backwards and starts each pair of repetitions at
// another variant, so no variant, dmio's or a peer's, always runs first or last, and no two
// always run in the same order.

/** `list` rotated left by `by` places (`by` may exceed the length; it wraps). */
export function rotated<T>(list: readonly T[], by: number): T[] {
  if (list.length === 0) return [];
  const shift = ((by % list.length) + list.length) % list.length;
  return [...list.slice(shift), ...list.slice(0, shift)];
}

/**
 * The order of `list` for repetition `rep` (from 0): rotated by `floor(rep / 2)`, and reversed
 * when `rep` is odd. Repetitions 0 and 1 run every pair both ways; 0, 1, 2 start at the first,
 * the last and the second variant.
 */
export function repetitionOrder<T>(list: readonly T[], rep: number): T[] {
  const order = rotated(list, Math.floor(rep / 2));
  return rep % 2 === 1 ? order.reverse() : order;
}

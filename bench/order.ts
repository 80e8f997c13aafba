// Owns the order in which a case's variants run. On this VM the position of a run decides much
// of its speed: the first run after a pause allocates memory the host has taken back (up to 5x
// slower), and later runs inherit the earlier ones' dirty pages and JIT-warm processes. Every
// workload therefore starts each repetition at another variant, so no variant, dmio's or a
// peer's, always runs first or always last.

/** `list` rotated left by `by` places (`by` may exceed the length; it wraps). */
export function rotated<T>(list: readonly T[], by: number): T[] {
  if (list.length === 0) return [];
  const shift = ((by % list.length) + list.length) % list.length;
  return [...list.slice(shift), ...list.slice(0, shift)];
}

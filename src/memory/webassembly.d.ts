// The one piece of the WebAssembly API the library uses (aligned.ts). @types/node@20 does not
// declare the WebAssembly global, and the DOM library would bring in far more than this.
declare namespace WebAssembly {
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
  }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer;
  }
}

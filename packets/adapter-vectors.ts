/**
 * The two adapter designs. `reference`: learned header and trailer vectors wrap the chunk and
 * their cache entries stay in the packet, so the question attends to them. `conditioned`: a learned
 * header is prefilled before the chunk to condition its keys and values and is then dropped, so
 * the packet holds only the chunk's entries (the same size as a packet without adapter).
 */
export type AdapterVariant = 'reference' | 'conditioned';

/** The vectors of an adapter in the model's input-embedding space. */
export interface AdapterVectors {
  /** Stable id, used in packet keys and file names: lowercase letters, digits, '-' and '_'. */
  id: string;
  /** sha256 over the variant and the vector bytes; packets record it. */
  fingerprint: string;
  variant: AdapterVariant;
  /** `[headerLength, hidden]`, row-major. */
  header: Float32Array;
  headerLength: number;
  /** `[trailerLength, hidden]`; empty for the conditioned variant. */
  trailer: Float32Array;
  trailerLength: number;
}

/** NIfTI-1 in the browser: read a volume (gzip or not) for display, write a label on an image's grid. */

export interface Volume {
  /** Sizes along i, j, k (first axis fastest in `data`). */
  dims: [number, number, number];
  /** Voxel sizes in millimetres. */
  spacing: [number, number, number];
  /** The voxels, as float32 for display. */
  data: Float32Array;
  /** The image's header (348 bytes and the 4-byte extension flag), reused for labels on its grid. */
  header: Uint8Array;
  min: number;
  max: number;
}

async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Reads a NIfTI-1 file (little-endian; .nii or .nii.gz). */
export async function readNifti(file: Uint8Array): Promise<Volume> {
  const bytes = file[0] === 0x1f && file[1] === 0x8b ? await gunzip(file) : file;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt32(0, true) !== 348) throw new Error("not a little-endian NIfTI-1 file");
  const dim = (n: number) => view.getInt16(40 + 2 * n, true);
  const dims: [number, number, number] = [dim(1), Math.max(1, dim(2)), dim(0) >= 3 ? Math.max(1, dim(3)) : 1];
  const spacing: [number, number, number] = [1, 2, 3].map((n) => view.getFloat32(76 + 4 * n, true) || 1) as [number, number, number];
  const datatype = view.getInt16(70, true);
  const offset = Math.max(352, Math.floor(view.getFloat32(108, true)));
  const slope = view.getFloat32(112, true) || 1;
  const inter = view.getFloat32(116, true) || 0;
  const count = dims[0] * dims[1] * dims[2];
  const raw = bytes.slice(offset, offset + count * itemSize(datatype)).buffer;
  const source = arrayOf(datatype, raw);
  const data = new Float32Array(count);
  let min = Infinity, max = -Infinity;
  for (let n = 0; n < count; n++) {
    const v = Number(source[n]) * slope + inter;
    data[n] = v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { dims, spacing, data, header: bytes.slice(0, 352), min, max };
}

function itemSize(datatype: number): number {
  return ({ 2: 1, 256: 1, 4: 2, 512: 2, 8: 4, 768: 4, 16: 4, 64: 8 } as Record<number, number>)[datatype] ?? 0;
}

function arrayOf(datatype: number, buffer: ArrayBuffer): ArrayLike<number> {
  switch (datatype) {
    case 2: return new Uint8Array(buffer);
    case 256: return new Int8Array(buffer);
    case 4: return new Int16Array(buffer);
    case 512: return new Uint16Array(buffer);
    case 8: return new Int32Array(buffer);
    case 768: return new Uint32Array(buffer);
    case 16: return new Float32Array(buffer);
    case 64: return new Float64Array(buffer);
    default: throw new Error(`NIfTI data type ${datatype} is not supported by the viewer`);
  }
}

/** A uint8 label on the image's grid (its header, with the label's type), as an uncompressed .nii file. */
export function writeLabelNifti(image: Volume, mask: ArrayLike<number>): Uint8Array {
  const count = image.dims[0] * image.dims[1] * image.dims[2];
  if (mask.length !== count) throw new Error(`mask has ${mask.length} voxels, the image ${count}`);
  const out = new Uint8Array(352 + count);
  out.set(image.header.subarray(0, 352));
  const view = new DataView(out.buffer);
  view.setInt16(70, 2, true); // DT_UINT8
  view.setInt16(72, 8, true); // bitpix
  view.setFloat32(108, 352, true); // vox_offset
  view.setFloat32(112, 1, true); // scl_slope
  view.setFloat32(116, 0, true); // scl_inter
  view.setInt32(348, 0, true); // no extensions
  for (let n = 0; n < count; n++) out[352 + n] = Number(mask[n]);
  return out;
}

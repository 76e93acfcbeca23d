/** Axial, coronal and sagittal slices of a volume, with window/level and a mask overlay. */
import type { Volume } from "./nifti.js";

export type Axis = 0 | 1 | 2; // sagittal (i fixed), coronal (j fixed), axial (k fixed)

/** The slice's width and height in voxels. */
export function sliceSize(volume: Volume, axis: Axis): [number, number] {
  const [nx, ny, nz] = volume.dims;
  return axis === 2 ? [nx, ny] : axis === 1 ? [nx, nz] : [ny, nz];
}

/** The voxel (i, j, k) under a slice pixel (x, y); rows are drawn top-down with j or k growing upward. */
export function voxelAt(volume: Volume, axis: Axis, index: number, x: number, y: number): [number, number, number] {
  const [, ny, nz] = volume.dims;
  if (axis === 2) return [x, ny - 1 - y, index];
  if (axis === 1) return [x, index, nz - 1 - y];
  return [index, x, nz - 1 - y];
}

/** Draws one slice: grey values by window/level, the mask's labels in colour on top. */
export function drawSlice(canvas: HTMLCanvasElement, volume: Volume, axis: Axis, index: number,
                          window: number, level: number, mask?: ArrayLike<number>): void {
  const [w, h] = sliceSize(volume, axis);
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(w, h);
  const [nx, ny] = volume.dims;
  const low = level - window / 2;
  const scale = 255 / Math.max(window, 1e-6);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [i, j, k] = voxelAt(volume, axis, index, x, y);
      const n = i + nx * (j + ny * k);
      const grey = Math.max(0, Math.min(255, (volume.data[n] - low) * scale));
      const p = 4 * (y * w + x);
      const label = mask ? Number(mask[n]) : 0;
      if (label > 0) {
        img.data[p] = 0.5 * grey + 127;
        img.data[p + 1] = 0.5 * grey + 30 * (label % 4);
        img.data[p + 2] = 0.5 * grey;
      } else {
        img.data[p] = img.data[p + 1] = img.data[p + 2] = grey;
      }
      img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

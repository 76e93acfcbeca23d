/**
 * The web viewer: everything a viewer plugin does, over the MONAI Label API from a browser.
 *
 * It lists the datastore, shows a picked image in three planes with window/level, runs an automatic
 * model and overlays its mask, sends foreground/background clicks to an interactive model through a
 * session (the volume uploaded once), saves the mask as the `final` label, asks for the next sample
 * and watches training. The API is reached on the page's own origin (the server's browser port) or
 * `?server=URL`, with gRPC-Web or `?protocol=connect`. The page's state is mirrored in
 * `document.body.dataset` for tests.
 */
import { connectWeb } from "../../typescript/src/web.js";
import { errorDetails, JobState, type Mask } from "../../typescript/src/index.js";
import { readNifti, type Volume, writeLabelNifti } from "./nifti.js";
import { type Axis, drawSlice, voxelAt } from "./slices.js";

const params = new URLSearchParams(location.search);
const client = connectWeb(params.get("server") ?? location.origin,
                          params.get("protocol") === "connect" ? "connect" : "grpcweb");
const clientId = `viewer-${Math.random().toString(16).slice(2, 10)}`;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const state = {
  imageId: "",
  volume: undefined as Volume | undefined,
  volumeBytes: undefined as Uint8Array | undefined,
  mask: undefined as Mask | undefined,
  sessionId: "",
  foreground: [] as number[][],
  background: [] as number[][],
  slices: [0, 0, 0],
  maskVersion: 0,
};
const views: Array<[Axis, string]> = [[2, "axial"], [1, "coronal"], [0, "sagittal"]];

function status(text: string): void {
  $("status").textContent = text;
}

async function guarded(what: string, work: () => Promise<void>): Promise<void> {
  document.body.dataset.busy = "1";
  try {
    await work();
    delete document.body.dataset.error;
  } catch (error) {
    const d = errorDetails(error);
    document.body.dataset.error = `${d.code}: ${d.message}`;
    status(`${what} failed: ${d.message}${d.reason ? ` (${d.reason})` : ""}`);
  } finally {
    delete document.body.dataset.busy;
  }
}

function render(): void {
  const volume = state.volume;
  if (!volume) return;
  const window = Number(($("window") as HTMLInputElement).value);
  const level = Number(($("level") as HTMLInputElement).value);
  for (const [axis, name] of views) {
    drawSlice($(name) as HTMLCanvasElement, volume, axis, state.slices[axis], window, level, state.mask?.data as ArrayLike<number>);
  }
}

async function refreshImages(): Promise<void> {
  const images = await client.listImages();
  const select = $("images") as HTMLSelectElement;
  select.replaceChildren(...images.map((image) => {
    const option = document.createElement("option");
    option.value = image.imageId;
    const final = image.labels.some((l) => l.tag === "final");
    option.textContent = `${image.imageId}${final ? " ✓" : ""}`;
    return option;
  }));
  document.body.dataset.images = String(images.length);
}

async function openImage(imageId: string): Promise<void> {
  status(`loading ${imageId}…`);
  const bytes = await client.downloadImage(imageId);
  const volume = await readNifti(bytes);
  Object.assign(state, { imageId, volume, volumeBytes: bytes, mask: undefined, sessionId: "", foreground: [],
                         background: [], slices: volume.dims.map((d) => Math.floor(d / 2)) });
  for (const [axis, name] of views) {
    const slider = $(`${name}-slice`) as HTMLInputElement;
    slider.max = String(volume.dims[axis] - 1);
    slider.value = String(state.slices[axis]);
  }
  const win = $("window") as HTMLInputElement, lvl = $("level") as HTMLInputElement;
  for (const input of [win, lvl]) {
    input.min = String(Math.floor(volume.min - (volume.max - volume.min)));
    input.max = String(Math.ceil(volume.max + (volume.max - volume.min)));
  }
  win.min = "1";
  win.value = String(Math.max(1, volume.max - volume.min));
  lvl.value = String((volume.max + volume.min) / 2);
  ($("images") as HTMLSelectElement).value = imageId;
  document.body.dataset.image = imageId;
  document.body.dataset.dims = volume.dims.join(",");
  render();
  status(`loaded ${imageId} (${volume.dims.join("×")})`);
}

function showMask(mask: Mask | undefined, what: string): void {
  state.mask = mask;
  state.maskVersion += 1;
  let voxels = 0;
  if (mask) for (let n = 0; n < mask.data.length; n++) if (Number(mask.data[n]) > 0) voxels++;
  document.body.dataset.maskVersion = String(state.maskVersion);
  document.body.dataset.maskSha = mask?.sha256 ?? "";
  document.body.dataset.maskVoxels = String(voxels);
  render();
  status(`${what}: ${voxels} voxels labelled`);
}

async function loadModels(): Promise<void> {
  const info = await client.info();
  const auto = $("model-auto") as HTMLSelectElement, inter = $("model-interactive") as HTMLSelectElement;
  for (const model of info.models) {
    const option = document.createElement("option");
    option.value = option.textContent = model.name;
    (model.interactive ? inter : auto).append(option);
  }
  const trainer = $("trainer") as HTMLSelectElement;
  for (const t of info.trainers) {
    const option = document.createElement("option");
    option.value = option.textContent = t.name;
    trainer.append(option);
  }
  // train the automatic model by default: its progress shows what labeling changed
  if (info.trainers.some((t) => t.name === auto.value)) trainer.value = auto.value;
  const strategy = $("strategy") as HTMLSelectElement;
  for (const s of info.strategies) {
    const option = document.createElement("option");
    option.value = option.textContent = s.name;
    strategy.append(option);
  }
  $("app").textContent = `${info.name} ${info.version}`;
}

async function click(axis: Axis, event: MouseEvent): Promise<void> {
  const volume = state.volume, model = ($("model-interactive") as HTMLSelectElement).value;
  if (!volume || !model) return;
  const canvas = event.currentTarget as HTMLCanvasElement;
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width);
  const y = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height);
  const point = voxelAt(volume, axis, state.slices[axis], x, y);
  const foreground = (document.querySelector("input[name=click]:checked") as HTMLInputElement).value === "fg";
  (foreground ? state.foreground : state.background).push(point);
  if (!state.sessionId) {
    status("uploading the volume for the session…");
    const session = await client.openSession({ data: state.volumeBytes!, content: { fileExtension: ".nii.gz" } }, 600);
    state.sessionId = session.sessionId;
    document.body.dataset.session = session.sessionId;
  }
  const out = await client.infer(model, { sessionId: state.sessionId },
                                 { foreground: state.foreground, background: state.background });
  document.body.dataset.clicks = String(state.foreground.length + state.background.length);
  showMask(out.mask, `${model} (${state.foreground.length} fg, ${state.background.length} bg clicks)`);
}

function wire(): void {
  $("open").onclick = () => guarded("open", () => openImage(($("images") as HTMLSelectElement).value));
  $("next").onclick = () => guarded("next sample", async () => {
    const sample = await client.nextSample(($("strategy") as HTMLSelectElement).value, clientId);
    if (!sample || !sample.imageId) {
      status("no image left to label");
      return;
    }
    await openImage(sample.imageId);
  });
  $("run-auto").onclick = () => guarded("inference", async () => {
    const model = ($("model-auto") as HTMLSelectElement).value;
    status(`running ${model}…`);
    showMask((await client.infer(model, { imageId: state.imageId })).mask, model);
  });
  $("clear").onclick = () => {
    state.foreground = [];
    state.background = [];
    showMask(undefined, "cleared");
  };
  $("save").onclick = () => guarded("save", async () => {
    if (!state.volume || !state.mask) throw new Error("nothing to save: run a model first");
    const label = await client.saveLabel(state.imageId, writeLabelNifti(state.volume, state.mask.data as ArrayLike<number>),
                                         { tag: "final", fileExtension: ".nii", info: { client: "web-viewer" } });
    document.body.dataset.saved = `${label.imageId}/${label.tag}/${label.sha256}`;
    status(`saved ${label.imageId} as final`);
    await refreshImages();
    ($("images") as HTMLSelectElement).value = state.imageId;
  });
  $("train").onclick = () => guarded("training", async () => {
    const model = ($("trainer") as HTMLSelectElement).value;
    const epochs = Number(($("epochs") as HTMLInputElement).value) || 1;
    const job = await client.startTrainJob(model, { maxEpochs: epochs, device: "cpu", extra: { pretrained: false } });
    document.body.dataset.trainJob = job.jobId;
    document.body.dataset.trainState = JobState[job.state];
    const progress = $("train-status");
    // JobService's watch: every event in order, resumed after a broken stream from the last one seen
    const ended = await client.watchJob(job.jobId, (event) => {
      if (event.event.case === "epoch") {
        const e = event.event.value;
        progress.textContent = `epoch ${e.epoch}/${e.maxEpochs}, best ${e.bestMetric.toFixed(3)}`;
        document.body.dataset.trainEpoch = String(e.epoch);
      } else if (event.event.case === "stateChange") {
        document.body.dataset.trainState = JobState[event.event.value.state];
        progress.textContent = `${JobState[event.event.value.state]} ${event.event.value.message}`;
      }
    });
    document.body.dataset.trainState = JobState[ended.state];
    progress.textContent = `training ${JobState[ended.state].toLowerCase()}${ended.error ? `: ${ended.error}` : ""}`;
  });
  for (const [axis, name] of views) {
    ($(`${name}-slice`) as HTMLInputElement).oninput = (e) => {
      state.slices[axis] = Number((e.target as HTMLInputElement).value);
      render();
    };
    $(name).onclick = (e) => guarded("click", () => click(axis, e));
  }
  $("window").oninput = $("level").oninput = () => render();
}

wire();
void guarded("start", async () => {
  await loadModels();
  await refreshImages();
  document.body.dataset.ready = "1";
  status("ready");
});

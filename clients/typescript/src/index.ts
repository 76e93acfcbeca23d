/** The MONAI Label TypeScript client: transport-neutral (see ./node.js and ./web.js for transports). */
export * from "./client.js";
export * from "./errors.js";
export * from "./jobs.js";
export { sha256Hex } from "./sha256.js";
export * as app from "./gen/monailabel/v1/app_pb.js";
export * as common from "./gen/monailabel/v1/common_pb.js";
export * as dataset from "./gen/monailabel/v1/dataset_pb.js";
export * as datastore from "./gen/monailabel/v1/datastore_pb.js";
export * as infer from "./gen/monailabel/v1/infer_pb.js";
export * as job from "./gen/monailabel/v1/job_pb.js";
export * as model from "./gen/monailabel/v1/model_pb.js";
export * as server from "./gen/monailabel/v1/server_pb.js";
export * as strategy from "./gen/monailabel/v1/strategy_pb.js";
export * as train from "./gen/monailabel/v1/train_pb.js";

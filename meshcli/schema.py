"""Every key of the NPZ files meshcli writes, documented in one place.

README's NPZ tables are checked against ``KEYS`` by the tests, and so is every
key each command writes. ``SCHEMA_VERSION`` is stored in each NPZ as
``schema_version``; it goes up when a key changes meaning or shape.

Kinds: ``row`` keys hold one entry per person per frame (leading dimension P,
all rows of an input in frame order); ``frame`` keys one entry per frame;
``input`` keys describe the input and how it was processed.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1
GROUPS = ("every", "pose", "body", "i2l", "hand")  # who writes a key: every command, or one kind of method


@dataclass(frozen=True)
class Key:
    name: str
    group: str  # one of GROUPS
    kind: str  # "row", "frame" or "input"
    shape: str  # P people, F frames, J joints
    meaning: str


KEYS: tuple[Key, ...] = (
    # -- every command
    Key("schema_version", "every", "input", "() int", "version of this NPZ layout (meshcli.schema)"),
    Key("frame_index", "every", "row", "(P,) int64", "the frame each row belongs to"),
    Key("track_id", "every", "row", "(P,) int32", "the person across frames (videos and image folders; --no-track: "
                                                  "absent)"),
    Key("num_frames", "every", "input", "() int64", "frames read from the input"),
    Key("incomplete", "every", "input", "() bool", "the video ended before its announced frame count or duration "
                                                   "(kept with `--keep-partial`)"),
    Key("image_size", "every", "input", "(2,) or (F, 2) int64", "frame (H, W); per frame when they differ"),
    Key("files", "every", "input", "(F,) or (1,) str", "frame file names (a video: its own name)"),
    Key("fps", "every", "input", "() float", "the video's frame rate (0 for images)"),
    Key("frame_time", "every", "frame", "(F,) float64", "videos: each frame's time in seconds from the first "
                                                        "frame (variable rates kept)"),
    Key("input", "every", "input", "() str", "the input as given on the command line"),
    Key("method", "every", "input", "() str", "method name"),
    Key("variant", "every", "input", "() str", "method variant"),
    Key("weights", "every", "input", "() str", "weights file name, or `untrained (random weights)`"),
    Key("weights_sha256", "every", "input", "() str", "its sha256 (empty when untrained)"),
    Key("untrained", "every", "input", "() bool", "made with --random-weights"),
    Key("half", "every", "input", "() bool", "the networks ran in fp16 autocast on a CUDA GPU (`--half`)"),
    Key("joint_names", "every", "input", "(J,) str", "names of the J joints of the joint rows"),
    # -- pose (DEKR)
    Key("keypoints", "pose", "row", "(P, J, 3) float32", "x, y in original-image pixels and the joint score"),
    Key("scores", "pose", "row", "(P,) float32", "person score (rescored unless --no-rescore)"),
    Key("bbox", "pose", "row", "(P, 4) float32", "x0, y0, x1, y1 of the keypoints, original-image pixels"),
    Key("skeleton", "pose", "input", "(L, 2) int64", "joint index pairs drawn as limbs"),
    Key("scales", "pose", "input", "(S,) float", "test scales"),
    Key("input_size", "pose", "input", "() int", "network input short side at scale 1, pixels"),
    Key("flip_test", "pose", "input", "() bool", "flip test on"),
    Key("nms_threshold", "pose", "input", "() float", "pose NMS threshold"),
    Key("center_threshold", "pose", "input", "() float", "minimum centre-map score of a person"),
    Key("max_people", "pose", "input", "() int", "most people kept per frame"),
    Key("rescored", "pose", "input", "() bool", "scores come from the rescoring net"),
    Key("backend", "pose", "input", "() str", "network runtime: torch or onnxruntime"),
    Key("rescore_weights", "pose", "input", "() str", "rescoring net file name (when rescored)"),
    Key("rescore_weights_sha256", "pose", "input", "() str", "its sha256"),
    # -- body (HMR, SPIN; I2L shares bbox, global_orient, body_pose, betas and the input keys)
    Key("bbox", "body", "row", "(P, 4) float64", "person box x0, y0, x1, y1 from the person source"),
    Key("crop_box", "body", "row", "(P, 4) float64", "the image region the crop covers"),
    Key("score", "body", "row", "(P,) float64", "person score from the source"),
    Key("global_orient", "body", "row", "(P, 3) float32", "root orientation, axis-angle"),
    Key("body_pose", "body", "row", "(P, 69) float32", "23 joint rotations, axis-angle"),
    Key("betas", "body", "row", "(P, 10) float32", "SMPL shape"),
    Key("cam", "body", "row", "(P, 3) float32", "the method's own camera: s, tx, ty"),
    Key("cam_t", "body", "row", "(P, 3) float64", "perspective translation of the mesh for rendering"),
    Key("focal_length", "body", "row", "(P, 2) float64", "pinhole focal length (px) in which cam_t renders"),
    Key("principal_point", "body", "row", "(P, 2) float64", "its principal point (px)"),
    Key("joints3d", "body", "row", "(P, J, 3) float32", "joints in model space"),
    Key("joints2d", "body", "row", "(P, J, 2) float64", "joints in original-image pixels"),
    Key("vertices", "body", "row", "(P, 6890, 3) float32", "mesh in model space (--save-vertices)"),
    Key("detector", "body", "input", "() str", "person source: dekr, full, openpose, boxes or bbox"),
    Key("detect_size", "body", "input", "() int", "the DEKR detector's input short side, pixels (`--detect-size`; "
                                                  "with `--detector dekr`)"),
    Key("smpl", "body", "input", "() str", "SMPL file name"),
    Key("smpl_sha256", "body", "input", "() str", "its sha256 (empty for a model given in Python)"),
    Key("renderer", "body", "input", "() str", "overlay renderer that ran"),
    Key("crop_size", "body", "input", "() int", "network crop side, pixels"),
    # -- I2L-MeshNet
    Key("joints_img", "i2l", "row", "(P, 29, 3) float32", "joints: u, v pixels and depth (m)"),
    Key("mesh_cam", "i2l", "row", "(P, 6890, 3) float32", "lixel mesh, camera space, m (--save-vertices)"),
    Key("mesh_cam_param", "i2l", "row", "(P, 6890, 3) float32", "parameter-stage mesh, camera space, m "
                                                                 "(--save-vertices)"),
    Key("cam_t", "i2l", "row", "(P, 3) float64", "SMPL's mesh of the parameters + cam_t = the parameter-stage "
                                                 "mesh, m"),
    Key("stage", "i2l", "input", "() str", "mesh drawn: lixel or param"),
    Key("param_stage", "i2l", "input", "() bool", "the snapshot's parameter stage is trained"),
    Key("focal", "i2l", "input", "(2,) float", "camera focal length, px"),
    Key("principal_point", "i2l", "row", "(P, 2) float64", "camera principal point used, px (--principal-point, "
                                                            "else the image centre)"),
    Key("root_depth", "i2l", "input", "() float", "camera to pelvis distance, m"),
    # -- hand (SRN)
    Key("joints_xyz", "hand", "row", "(F, J, 3) float32", "camera space, mm (x right, y down, z forward)"),
    Key("joints_uvd", "hand", "row", "(F, J, 3) float32", "u = column, v = row (px), d (mm)"),
    Key("centre_xyz", "hand", "row", "(F, 3) float32", "hand centre used for the crop, mm"),
    Key("frame_status", "hand", "frame", "(F,) str", "`ok`, or why the frame has no hand (NaN joints)"),
    Key("joint_order", "hand", "input", "() str", "hands17 or msra"),
    Key("intrinsics", "hand", "input", "(4,) float64", "fx, fy, cx, cy"),
    Key("cube_mm", "hand", "input", "() float", "side of the crop cube, mm"),
    Key("mirror", "hand", "input", "() bool", "frames mirrored before the network"),
    Key("centre_source", "hand", "input", "() str", "auto, fixed or file NAME"),
    Key("depth_format", "hand", "input", "() str", "16bit or nyu"),
    Key("depth_scale", "hand", "input", "() float", "stored units to mm"),
)
# --smooth keeps each smoothed key's per-frame value as <key>_raw (meshcli.temporal)
SMOOTHED = {"pose": ("keypoints",),
            "body": ("global_orient", "body_pose", "betas", "cam", "cam_t", "joints3d", "joints2d", "vertices"),
            "i2l": ("joints_img", "mesh_cam", "cam_t", "mesh_cam_param"),
            "hand": ("joints_xyz", "joints_uvd")}
KEYS += tuple(Key(f"{k.name}_raw", k.group, "row", k.shape, f"{k.name} before --smooth")
              for group, names in SMOOTHED.items() for name in names for k in KEYS
              if k.name == name and k.group == group)


def keys_for(group: str) -> dict[str, Key]:
    """The keys an NPZ of ``group`` may hold: its own and every command's (I2L: body's shared ones too)."""
    groups = {"every", group} | ({"body"} if group == "i2l" else set())
    out = {k.name: k for k in KEYS if k.group in groups}
    out.update({k.name: k for k in KEYS if k.group == group})  # a group's own meaning wins (principal_point)
    return out


def group_of(method: str, task: str) -> str:
    return "i2l" if method == "i2l" else task

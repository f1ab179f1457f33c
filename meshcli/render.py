"""Drawing posed body meshes over frames.

Three backends, best first: pyrender on headless EGL, pyrender on OSMesa, and
an OpenCV painter that fills shaded triangles far to near (no OpenGL at all).
``MeshRenderer.backend`` says which one draws; ``fallback_reason`` says why a
better one was not used.

Coordinates: meshes are given in the OpenCV camera frame (x right, y down,
z forward, as HMR/SPIN/I2L output them once rotated by their global
orientation) plus a per-person translation ``cam_t``; a pixel is
``u = fx X / Z + cx``, ``v = fy Y / Z + cy`` with integer coordinates at pixel
centres (OpenCV's convention) in both the OpenGL and the OpenCV backends.

Threads: an OpenGL context is bound to the thread that made it current
(pyrender never releases it). The renderer therefore creates a context
lazily, in the first ``render`` call of each thread, so every thread that
calls ``Predictor.annotate`` (the pipeline's annotate workers) creates and
owns its own and threads render at the same time; construct the MeshRenderer
anywhere, and call ``close`` at the end in each thread that rendered.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Sequence

import cv2
import numpy as np

from .draw import colour

BACKENDS = ("auto", "egl", "osmesa", "wireframe")

# PyOpenGL binds one platform per process, when OpenGL is first imported, so the
# choice is made once: (platform or None, reason it is None).
_gl_choice: tuple[str | None, str | None] | None = None
_gl_lock = threading.Lock()


def _egl_display_initialises() -> bool:
    """Whether EGL can open a display the way pyrender does (device 0, or EGL_DEVICE_ID)."""
    name = ctypes.util.find_library("EGL")
    if not name:
        return False
    try:
        egl = ctypes.CDLL(name)
    except OSError:
        return False
    vp, i32 = ctypes.c_void_p, ctypes.c_int32
    egl.eglGetProcAddress.restype, egl.eglGetProcAddress.argtypes = vp, [ctypes.c_char_p]
    egl.eglInitialize.restype, egl.eglInitialize.argtypes = ctypes.c_uint32, [vp, ctypes.POINTER(i32),
                                                                               ctypes.POINTER(i32)]
    egl.eglTerminate.argtypes = [vp]
    query_addr = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    display_addr = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if query_addr and display_addr:
        query = ctypes.CFUNCTYPE(ctypes.c_uint32, i32, ctypes.POINTER(vp), ctypes.POINTER(i32))(query_addr)
        get_display = ctypes.CFUNCTYPE(vp, ctypes.c_uint32, vp, vp)(display_addr)
        devices, count = (vp * 16)(), i32(0)
        index = int(os.environ.get("EGL_DEVICE_ID", "0"))
        if not query(16, devices, ctypes.byref(count)) or count.value <= index:
            return False
        display = get_display(0x313F, devices[index], None)  # EGL_PLATFORM_DEVICE_EXT
    else:
        egl.eglGetDisplay.restype, egl.eglGetDisplay.argtypes = vp, [vp]
        display = egl.eglGetDisplay(None)
    major, minor = i32(), i32()
    if not display or not egl.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)):
        return False
    egl.eglTerminate(display)
    return True


def gl_platform() -> tuple[str | None, str | None]:
    """The OpenGL platform pyrender will use here ('egl' or 'osmesa'), or None and why not.

    Honours a PYOPENGL_PLATFORM set by the user; otherwise probes EGL, then
    OSMesa, and sets PYOPENGL_PLATFORM before OpenGL is imported.
    """
    global _gl_choice
    with _gl_lock:
        if _gl_choice is None:
            _gl_choice = _choose_gl_platform()
        return _gl_choice


def _choose_gl_platform() -> tuple[str | None, str | None]:
    user = os.environ.get("PYOPENGL_PLATFORM")
    if user:
        if user not in ("egl", "osmesa"):
            return None, f"PYOPENGL_PLATFORM={user} is not a headless platform (egl or osmesa)"
        return user, None
    if "OpenGL.platform" in sys.modules:  # someone imported OpenGL first: its platform is fixed
        bound = type(getattr(sys.modules["OpenGL.platform"], "PLATFORM", None)).__name__
        platform = {"EGLPlatform": "egl", "OSMesaPlatform": "osmesa"}.get(bound)
        if platform is None:
            return None, f"OpenGL was imported with a non-headless platform ({bound}) before meshcli could choose"
        os.environ["PYOPENGL_PLATFORM"] = platform  # pyrender picks its context type from this
        return platform, None
    if _egl_display_initialises():
        platform = "egl"
    elif ctypes.util.find_library("OSMesa"):
        platform = "osmesa"
    else:
        return None, "neither EGL (libEGL with a usable device) nor OSMesa (libOSMesa) is available"
    os.environ["PYOPENGL_PLATFORM"] = platform
    return platform, None


def _spare_egl_display(offscreen) -> None:
    """Make deleting this renderer destroy only its own EGL context.

    pyrender's EGL ``delete_context`` also calls eglTerminate on the display,
    which every context on the same device shares: freeing one thread's
    renderer (or a garbage-collected one) would break all the others.
    """
    platform = getattr(offscreen, "_platform", None)
    if platform is None or not hasattr(platform, "_egl_display"):
        return

    def destroy_own_context() -> None:
        from OpenGL.EGL import eglDestroyContext

        if platform._egl_context is not None:
            eglDestroyContext(platform._egl_display, platform._egl_context)
            platform._egl_context = None

    platform.delete_context = destroy_own_context


class MeshRenderer:
    """Renders several people's meshes into a frame in one pass; reuse it for every frame.

    ``backend``: "auto" (EGL, else OSMesa, else the OpenCV painter), "egl" or
    "osmesa" (that platform or the painter), or "wireframe" (the painter).
    The OpenGL renderer is made once and resized when the frame size changes.
    """

    def __init__(self, faces: np.ndarray, backend: str = "auto", opacity: float = 0.85):
        if backend not in BACKENDS:
            raise ValueError(f"unknown mesh renderer {backend!r}; use one of {', '.join(BACKENDS)}")
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.opacity = float(opacity)
        self.fallback_reason: str | None = None
        self._local = threading.local()  # .offscreen: this thread's pyrender.OffscreenRenderer
        if backend == "wireframe":
            self.backend = "wireframe"
            return
        platform, why = gl_platform()
        if platform is None or backend not in ("auto", platform):
            self.backend = "wireframe"
            self.fallback_reason = why or f"{backend} was asked for but this process uses {platform}"
        else:
            self.backend = platform

    def render(self, image: np.ndarray, vertices: np.ndarray | Sequence[np.ndarray], cam_t: np.ndarray,
               focal: float | tuple[float, float], principal: tuple[float, float] | None = None,
               colours: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
        """A copy of ``image`` (HxWx3 uint8 RGB) with each person's mesh drawn over it.

        ``vertices`` (P, V, 3) and ``cam_t`` (P, 3) in the camera frame described
        in the module docstring; ``focal`` f or (fx, fy) and ``principal``
        (cx, cy) in pixels (default: the image centre); ``colours`` one RGB per
        person (default: meshcli's person palette). People behind the camera
        are not drawn.
        """
        h, w = image.shape[:2]
        fx, fy = (float(focal), float(focal)) if np.isscalar(focal) else map(float, focal)
        cx, cy = ((w - 1) / 2, (h - 1) / 2) if principal is None else map(float, principal)
        verts = [np.asarray(v, dtype=np.float64) + np.asarray(t, dtype=np.float64).reshape(1, 3)
                 for v, t in zip(vertices, np.asarray(cam_t).reshape(-1, 3))]
        rgb = [colours[k] if colours is not None else colour(k) for k in range(len(verts))]
        out = image.copy()
        # Only the pixels people cover are drawn: each group of people whose projected boxes overlap
        # (only they can hide one another) is rendered in a viewport around the group's box.
        for (x0, y0, x1, y1), members in person_regions(verts, fx, fy, cx, cy, w, h):
            crop = image[y0:y1, x0:x1]
            group = [verts[k] for k in members]
            colours_k = [rgb[k] for k in members]
            out[y0:y1, x0:x1] = self._draw(crop, group, colours_k, fx, fy, cx - x0, cy - y0)
        return out

    def _draw(self, image, verts, rgb, fx, fy, cx, cy) -> np.ndarray:
        h, w = image.shape[:2]
        if self.backend != "wireframe":
            try:
                rgba = self._render_gl(w, h, verts, rgb, fx, fy, cx, cy).astype(np.float32)
                # Over a transparent black background the multisampled colour comes out
                # premultiplied by its coverage (alpha): blend it as such for smooth edges.
                a = self.opacity * rgba[..., 3:] / 255.0
                out = image.astype(np.float32) * (1.0 - a) + self.opacity * rgba[..., :3]
                return np.clip(np.round(out), 0, 255).astype(np.uint8)
            except Exception as err:  # noqa: BLE001 - any GL failure: say why and keep going
                self._give_up_gl(f"{self.backend} rendering failed ({type(err).__name__}: {err})")
        return self._paint(image, verts, rgb, fx, fy, cx, cy)

    def close(self) -> None:
        """Free this thread's OpenGL context (call from the thread that renders)."""
        offscreen, self._local.offscreen = getattr(self._local, "offscreen", None), None
        if offscreen is not None:
            offscreen.delete()

    # ---------------------------------------------------------------- OpenGL

    def _give_up_gl(self, reason: str) -> None:
        self.backend, self.fallback_reason = "wireframe", reason
        offscreen, self._local.offscreen = getattr(self._local, "offscreen", None), None
        if offscreen is not None:
            try:
                offscreen.delete()
            except Exception:  # noqa: BLE001 - the context is already broken
                pass

    def _offscreen(self, w: int, h: int):
        import pyrender  # after gl_platform() has set PYOPENGL_PLATFORM

        offscreen = getattr(self._local, "offscreen", None)
        if offscreen is None:
            offscreen = self._local.offscreen = pyrender.OffscreenRenderer(w, h)
            _spare_egl_display(offscreen)
        else:  # framebuffers are resized in place on the next render
            offscreen.viewport_width, offscreen.viewport_height = w, h
        return offscreen

    def _render_gl(self, w, h, verts, rgb, fx, fy, cx, cy) -> np.ndarray:
        import pyrender
        import trimesh

        offscreen = self._offscreen(w, h)
        # OpenCV camera (y down, z forward) -> OpenGL camera (y up, looking along -z).
        flip = np.array([1.0, -1.0, -1.0])
        primitives = []
        for v, c in zip(verts, rgb):
            material = pyrender.MetallicRoughnessMaterial(
                metallicFactor=0.0, roughnessFactor=0.6, doubleSided=True,
                baseColorFactor=(c[0] / 255, c[1] / 255, c[2] / 255, 1.0))
            mesh = trimesh.Trimesh(v * flip, self.faces, process=False)
            primitives += pyrender.Mesh.from_trimesh(mesh, material=material).primitives
        scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(0.35, 0.35, 0.35))
        scene.add(pyrender.Mesh(primitives))
        # pyrender puts pixel i's centre at i + 0.5; shift so integer coordinates are centres.
        scene.add(pyrender.IntrinsicsCamera(fx, fy, cx + 0.5, cy + 0.5, znear=0.01), pose=np.eye(4))
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.5), pose=np.eye(4))
        rgba, _ = offscreen.render(scene, flags=pyrender.RenderFlags.RGBA)
        return rgba

    # ---------------------------------------------------------------- OpenCV

    def _paint(self, image, verts, rgb, fx, fy, cx, cy) -> np.ndarray:
        """Shaded triangles drawn far to near (painter's algorithm), back faces culled."""
        h, w = image.shape[:2]
        tris, depths, colours = [], [], []
        for v, c in zip(verts, rgb):
            tri = v[self.faces]  # (F, 3 corners, xyz)
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            centre = tri.mean(axis=1)
            facing = -(normal * centre).sum(1) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(centre, axis=1)
                                                  + 1e-12)
            z = tri[..., 2]
            keep = (z > 1e-3).all(1) & (facing > 0)
            uv = np.stack([fx * tri[keep, :, 0] / z[keep] + cx, fy * tri[keep, :, 1] / z[keep] + cy], axis=-1)
            inside = ((uv[..., 0].max(1) >= 0) & (uv[..., 0].min(1) < w)
                      & (uv[..., 1].max(1) >= 0) & (uv[..., 1].min(1) < h))
            shade = 0.35 + 0.65 * facing[keep][inside]
            tris.append(uv[inside])
            depths.append(centre[keep, 2][inside])
            colours.append(shade[:, None] * np.asarray(c, dtype=np.float64))
        tris, depths, colours = np.concatenate(tris), np.concatenate(depths), np.concatenate(colours)
        order = np.argsort(-depths, kind="stable")
        # 2 fractional bits: cv2 draws with sub-pixel accuracy; clip keeps int32 safe.
        pts = np.round(np.clip(tris[order], -1e6, 1e6) * 4).astype(np.int32)
        cols = np.round(colours[order]).astype(np.int32).tolist()
        layer = image.copy()
        for p, c in zip(pts, cols):
            cv2.fillConvexPoly(layer, p, c, cv2.LINE_8, 2)
        # Where nothing was drawn layer == image, so the blend leaves those pixels unchanged.
        return cv2.addWeighted(layer, self.opacity, image, 1.0 - self.opacity, 0.0)


def person_regions(verts: Sequence[np.ndarray], fx: float, fy: float, cx: float, cy: float, w: int, h: int,
                   margin: int = 2) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """Pixel boxes (x0, y0, x1, y1) to draw in, each with the people drawn in it.

    A person's box bounds the projection of its vertices in front of the camera (plus ``margin`` px for
    antialiased edges), clipped to the image; people whose boxes overlap share one box, the union, since
    only they can occlude one another. People entirely behind the camera or outside the image get none.
    """
    boxes: list[list[int]] = []
    members: list[list[int]] = []
    for k, v in enumerate(verts):
        front = v[v[:, 2] > 1e-3]
        if not len(front):
            continue
        u, t = fx * front[:, 0] / front[:, 2] + cx, fy * front[:, 1] / front[:, 2] + cy
        box = [max(0, int(np.floor(u.min())) - margin), max(0, int(np.floor(t.min())) - margin),
               min(w, int(np.ceil(u.max())) + 1 + margin), min(h, int(np.ceil(t.max())) + 1 + margin)]
        if box[0] >= box[2] or box[1] >= box[3]:
            continue
        boxes.append(box)
        members.append([k])
    merged = True
    while merged:  # merge until no two boxes overlap
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    members[i] = sorted(members[i] + members.pop(j))
                    boxes.pop(j)
                    merged = True
                    break
            if merged:
                break
    return [(tuple(box), group) for box, group in zip(boxes, members)]


def weak_perspective_to_translation(cam: np.ndarray, crop_centre: np.ndarray, crop_size: np.ndarray | float,
                                    focal: float, principal: tuple[float, float]) -> np.ndarray:
    """Per-person camera translation (P, 3) for a full-image pinhole camera from HMR-style crop cameras.

    ``cam`` (P, 3) is (s, tx, ty): a body point X lands in the crop at
    ``s (X_xy + t)`` with [-1, 1] spanning the crop, i.e. in image pixels at
    ``c + (b/2) s (X_xy + t)`` for a crop of side ``b`` pixels centred at ``c``
    (``crop_centre`` (P, 2), ``crop_size`` (P,) or scalar, in original image
    pixels). A pinhole camera with focal ``f`` and principal point ``p`` puts a
    point at depth ``T_z`` at ``p + f (X_xy + T_xy) / T_z``. Equating the two for
    points near the body's centre gives

        T_z  = 2 f / (s b)
        T_xy = t + 2 (c - p) / (s b)

    the translation that reproduces the method's own projection most closely
    (SPIN's demo ``2 * 5000 / (224 s)`` is the case p = c, b = 224, f = 5000;
    HMR's ``500 / (112 s)`` is f = 500, b = 224). All people then share one
    camera, so they render in one pass. ``s <= 0`` puts a person behind the
    camera (not drawn); 1e-9 keeps s = 0 finite, as SPIN does.
    """
    cam = np.asarray(cam, dtype=np.float64).reshape(-1, 3)
    centre = np.asarray(crop_centre, dtype=np.float64).reshape(-1, 2)
    size = np.broadcast_to(np.asarray(crop_size, dtype=np.float64), (len(cam),))
    denom = cam[:, 0] * size + 1e-9
    t_xy = cam[:, 1:] + 2.0 * (centre - np.asarray(principal, dtype=np.float64)) / denom[:, None]
    return np.concatenate([t_xy, (2.0 * float(focal) / denom)[:, None]], axis=1)

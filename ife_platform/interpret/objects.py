"""Object ground truth per frame: boxes of a game's objects on the raw 210x160 screen.

Mask-object alignment (``shared/reference/metrics.md``) scores an attention mask against the
pixels covered by the game's objects. This module yields those objects, frame by frame, as
:class:`ObjectBox` values in raw screen pixels (``x`` = column, ``y`` = row of the top-left
corner, ``w`` x ``h`` pixels; the 210 x 160 frame of ``ale.getScreenRGB()``). Map them through
the observation's crop/resize before scoring.

Two backends, one interface (:class:`ObjectSource`, built by :func:`object_source`):

- ``"builtin"``: always available, no extra dependency, used by the test suite. Small
  detectors for Pong, Breakout, Boxing and Freeway that read the flat-coloured sprites of the
  RGB frame, helped by RAM addresses checked against the frames where colour alone is
  ambiguous (Breakout's ball and paddle share the colour of the red brick row; Freeway's
  chicken shares the colour of the centre line). Per game:

  * ``pong``: ``player`` (right, green paddle), ``enemy`` (left, orange paddle), ``ball``.
    Only rows 34-193 (between the walls) are searched, so score digits and walls never count.
  * ``breakout``: ``player`` (paddle), ``ball``. Bricks, walls and the HUD are excluded.
  * ``boxing``: ``player`` (white boxer), ``enemy`` (black boxer), inside the ring only.
  * ``freeway``: ``player`` (the left chicken), ``enemy`` (each car). The idle second chicken,
    lane markings and the HUD are excluded.

- ``"ocatari"``: the OCAtari package (PyPI ``ocatari``, RAM mode), about 58 games, when it is
  installed. It is driven from *our* emulator's RAM (no second environment is created); its
  object classes are mapped onto the vocabulary below. OCAtari 2.2.1 pins ``numpy<2`` in its
  metadata, but its RAM mode runs on numpy 2 when handed the RAM as Python-int-like bytes
  (see ``_ByteRAM``); install it without its pins (see :data:`OCATARI_INSTALL_HINT`).

``"auto"`` picks ``ocatari`` when it is importable and covers the game, else ``builtin``, else
raises :class:`UnsupportedGameError`.

Category vocabulary (:data:`CATEGORIES`):

- ``player``: what the agent controls (paddle, ship, boxer, chicken, ...);
- ``enemy``: opponents and moving hazards (enemy paddle, aliens, ghosts, cars, ...);
- ``ball``: a game ball or puck (Pong, Breakout, Tennis, Ice Hockey, Bowling, ...);
- ``projectile``: shots, missiles, bombs, thrown things, by either side;
- ``other``: everything else that is part of the play field (bricks, pickups, ladders, ...).

HUD objects (scores, lives, timers, gauges, minimaps) are excluded by default.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

SCREEN_H, SCREEN_W = 210, 160
CATEGORIES = ("player", "enemy", "ball", "projectile", "other")
BACKENDS = ("auto", "builtin", "ocatari")

OCATARI_VERSION = "2.2.1"
OCATARI_INSTALL_HINT = (
    "pip install 'ife-platform[objects]' && "
    f"pip install --no-deps 'ocatari=={OCATARI_VERSION}' "
    "(--no-deps: ocatari's own metadata pins numpy<2 and opencv-python, which would break "
    "this install; the [objects] extra brings its real runtime imports)"
)


@dataclass(frozen=True)
class ObjectBox:
    """One object on the raw 210x160 screen.

    Attributes:
        category: One of :data:`CATEGORIES`.
        x: Left column of the box, in screen pixels.
        y: Top row of the box, in screen pixels.
        w: Width in pixels (the box covers columns ``x`` to ``x + w``, end exclusive).
        h: Height in pixels (rows ``y`` to ``y + h``, end exclusive).
        name: The backend's own name for the object (``"paddle"``, OCAtari's ``"Player"``).
    """

    category: str
    x: float
    y: float
    w: float
    h: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category {self.category!r} is not one of {CATEGORIES}")
        if self.w < 0 or self.h < 0:
            raise ValueError(f"negative box size w={self.w}, h={self.h}")

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` with exclusive ends."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @property
    def area(self) -> float:
        """Area in square pixels."""
        return self.w * self.h


class UnsupportedGameError(ValueError):
    """No backend gives object ground truth for this game."""


class ObjectBackendUnavailableError(ImportError):
    """The requested backend's optional package is not installed (or fails to import)."""


class ObjectSource(ABC):
    """Gives the object boxes of one game's current frame.

    Call :meth:`boxes` after every environment step (and after a reset) with the live
    emulator and the RGB frame of that step. A source may keep state between calls (OCAtari
    tracks objects); it notices a new episode by itself from the emulator's frame counter.

    Attributes:
        game: ale-py ROM id (``"pong"``).
        name: The backend (``"builtin"`` or ``"ocatari"``).
    """

    game: str
    name: str

    @abstractmethod
    def boxes(self, ale: Any, rgb_frame: np.ndarray) -> list[ObjectBox]:
        """The objects on the current screen.

        Args:
            ale: The ``ale_py.ALEInterface`` that produced the frame (its RAM is read).
            rgb_frame: uint8 ``[210, 160, 3]`` screen of the same step.

        Returns:
            The boxes, clipped to the screen, HUD excluded unless the source was built with it.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(game={self.game!r}, name={self.name!r})"


# --------------------------------------------------------------------------------------------
# Built-in detectors (RGB colours and RAM addresses checked on ale-py 0.12.1 frames).

RGB = tuple[int, int, int]


def _mask(frame: np.ndarray, rgb: RGB) -> np.ndarray:
    """Pixels of exactly one colour (Atari sprites are flat-coloured)."""
    return (frame == np.asarray(rgb, dtype=frame.dtype)).all(axis=-1)


def _bbox(mask: np.ndarray, dy: int = 0, dx: int = 0) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the set pixels of a mask, offset by ``(dx, dy)``; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        int(cols[0]) + dx,
        int(rows[0]) + dy,
        int(cols[-1] - cols[0]) + 1,
        int(rows[-1] - rows[0]) + 1,
    )


def _box(category: str, name: str, xywh: tuple[int, int, int, int] | None) -> list[ObjectBox]:
    return [] if xywh is None else [ObjectBox(category, *map(float, xywh), name=name)]


def _components(mask: np.ndarray, min_area: int, dy: int = 0, dx: int = 0):
    """Boxes ``(x, y, w, h)`` of the 8-connected components of a mask with enough pixels."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [
        (int(s[0]) + dx, int(s[1]) + dy, int(s[2]), int(s[3]))
        for s in stats[1:n]
        if s[4] >= min_area
    ]


# Pong: walls are rows 24-33 and 194-209 (same white as the ball), scores above row 24.
PONG_PLAY_ROWS = (34, 194)
PONG_PLAYER_RGB: RGB = (92, 186, 92)  # right paddle, columns 140-143
PONG_ENEMY_RGB: RGB = (213, 130, 74)  # left paddle, columns 16-19
PONG_BALL_RGB: RGB = (236, 236, 236)


def _pong(ram: np.ndarray, frame: np.ndarray) -> list[ObjectBox]:
    r0, r1 = PONG_PLAY_ROWS
    play = frame[r0:r1]
    half = SCREEN_W // 2
    return (
        _box("player", "paddle", _bbox(_mask(play[:, half:], PONG_PLAYER_RGB), r0, half))
        + _box("enemy", "enemy_paddle", _bbox(_mask(play[:, :half], PONG_ENEMY_RGB), r0))
        + _box("ball", "ball", _bbox(_mask(play, PONG_BALL_RGB), r0))
    )


# Breakout: the play field is columns 8-151 (side walls outside); the paddle is drawn in rows
# 189-192 at column ram[72] - 47 (16 wide, 8 after the ball reached the top); the ball (2x4)
# at (ram[99] - 49, ram[101] + 9). Both share the colour of the top (red) brick row, so the
# RAM position decides where to look and the frame confirms and tightens it.
BREAKOUT_RGB: RGB = (200, 72, 72)
BREAKOUT_COLS = (8, 152)
BREAKOUT_PADDLE_ROWS = (189, 193)


def _breakout(ram: np.ndarray, frame: np.ndarray) -> list[ObjectBox]:
    c0, c1 = BREAKOUT_COLS
    red = np.zeros(frame.shape[:2], dtype=bool)
    red[:, c0:c1] = _mask(frame[:, c0:c1], BREAKOUT_RGB)
    out: list[ObjectBox] = []

    # Paddle: columns red over all its 4 rows, in the contiguous run from the RAM position.
    p0, p1 = BREAKOUT_PADDLE_ROWS
    px = int(ram[72]) - 47
    lo, hi = max(px - 1, c0), min(px + 17, c1)
    if lo < hi:
        full = red[p0:p1, lo:hi].all(axis=0)
        cols = np.flatnonzero(full)
        if cols.size:
            start = int(cols[0])
            end = start
            while end + 1 < full.size and full[end + 1] and end + 1 - start < 16:
                end += 1
            out += _box("player", "paddle", (lo + start, p0, end - start + 1, p1 - p0))

    # Ball: the RAM estimate, kept when ball-coloured pixels lie under it (it is not drawn
    # between serves); tightened to those pixels when they form a blob no larger than the ball.
    by = int(ram[101])
    if by != 0:
        bx, by = int(ram[99]) - 49, by + 9
        y0, y1 = max(by - 1, 0), min(by + 5, SCREEN_H)
        x0, x1 = max(bx - 1, c0), min(bx + 3, c1)
        if y0 < y1 and x0 < x1 and red[y0:y1, x0:x1].any():
            tight = _bbox(red[y0:y1, x0:x1], y0, x0)
            if tight is not None and tight[2] <= 2 and tight[3] <= 4:
                out += _box("ball", "ball", tight)
            else:
                out += _box("ball", "ball", _clip_xywh(bx, by, 2, 4, (c0, c1)))
    return out


def _clip_xywh(
    x: float, y: float, w: float, h: float, cols: tuple[int, int] = (0, SCREEN_W)
) -> tuple[float, float, float, float] | None:
    """Clip a box to the screen (and a column range); None when nothing is left."""
    x0, y0 = max(x, cols[0]), max(y, 0)
    x1, y1 = min(x + w, cols[1]), min(y + h, SCREEN_H)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


# Boxing: the ring's ropes are columns 28-31 / 128-131 and rows 25-35 / 177-187; the boxers
# stay inside rows 36-176, columns 32-127. Score digits (white) and the logo (black) are outside.
BOXING_ROWS = (30, 182)
BOXING_COLS = (32, 128)
BOXING_PLAYER_RGB: RGB = (214, 214, 214)
BOXING_ENEMY_RGB: RGB = (0, 0, 0)


def _boxing(ram: np.ndarray, frame: np.ndarray) -> list[ObjectBox]:
    (r0, r1), (c0, c1) = BOXING_ROWS, BOXING_COLS
    ring = frame[r0:r1, c0:c1]
    return _box("player", "boxer", _bbox(_mask(ring, BOXING_PLAYER_RGB), r0, c0)) + _box(
        "enemy", "enemy_boxer", _bbox(_mask(ring, BOXING_ENEMY_RGB), r0, c0)
    )


# Freeway: the player's chicken is yellow in columns 44-50, its top row is 193 - ram[14];
# the centre line (rows 102 and 104) has the same yellow. Cars (8 rows, 10 lanes from row 28)
# are every colour that is not background, lane marking or chicken.
FREEWAY_CHICKEN_RGB: RGB = (252, 252, 84)
FREEWAY_CHICKEN_COLS = (40, 58)
FREEWAY_LINE_ROWS = (102, 104)
FREEWAY_ROAD_ROWS = (20, 190)
FREEWAY_BACKGROUND: tuple[RGB, ...] = (
    (0, 0, 0),
    (142, 142, 142),
    (170, 170, 170),
    (214, 214, 214),
    FREEWAY_CHICKEN_RGB,
)


def _freeway(ram: np.ndarray, frame: np.ndarray) -> list[ObjectBox]:
    c0, c1 = FREEWAY_CHICKEN_COLS
    chicken = _mask(frame[:, c0:c1], FREEWAY_CHICKEN_RGB)
    top = 193 - int(ram[14])
    for row in FREEWAY_LINE_ROWS:  # line pixels count only where the chicken is
        if not top <= row < top + 8:
            chicken[row] = False
    chicken[: FREEWAY_ROAD_ROWS[0]] = False
    out = _box("player", "chicken", _bbox(chicken, 0, c0))
    r0, r1 = FREEWAY_ROAD_ROWS
    road = frame[r0:r1]
    car = np.ones(road.shape[:2], dtype=bool)
    for rgb in FREEWAY_BACKGROUND:
        car &= ~_mask(road, rgb)
    for xywh in _components(car, min_area=4, dy=r0):
        out += _box("enemy", "car", xywh)
    return out


_BUILTIN_DETECTORS = {
    "boxing": _boxing,
    "breakout": _breakout,
    "freeway": _freeway,
    "pong": _pong,
}


class BuiltinObjectSource(ObjectSource):
    """Colour/RAM detectors shipped with the platform (no extra dependency).

    Args:
        game: One of ``supported_games("builtin")``.
    """

    name = "builtin"

    def __init__(self, game: str) -> None:
        if game not in _BUILTIN_DETECTORS:
            raise UnsupportedGameError(_unsupported_msg(game, "builtin"))
        self.game = game
        self._detect = _BUILTIN_DETECTORS[game]

    def boxes(self, ale: Any, rgb_frame: np.ndarray) -> list[ObjectBox]:  # noqa: D102
        frame = np.asarray(rgb_frame)
        if frame.shape != (SCREEN_H, SCREEN_W, 3):
            raise ValueError(f"expected a raw {SCREEN_H}x{SCREEN_W}x3 frame, got {frame.shape}")
        return self._detect(ale.getRAM(), frame)


# --------------------------------------------------------------------------------------------
# OCAtari backend.

# ale-py ROM ids whose OCAtari 2.2.1 RAM extractor ran without error and found moving objects
# over 400 random steps on ale-py 0.12.1 (numpy 2, RAM given as _ByteRAM). Left out: time_pilot
# (IndexError in 2.2.1 itself, under numpy 1 too), robotank (finds no object), keystone_kapers
# (every box stays at (0, 0)).
OCATARI_GAMES: tuple[str, ...] = tuple(
    """
    adventure air_raid alien amidar assault asterix asteroids atlantis bank_heist battle_zone
    beam_rider berzerk bowling boxing breakout carnival centipede chopper_command crazy_climber
    demon_attack donkey_kong double_dunk enduro fishing_derby freeway frogger frostbite galaxian
    gopher hero ice_hockey jamesbond kangaroo king_kong krull kung_fu_master mario_bros
    montezuma_revenge ms_pacman name_this_game pacman phoenix pitfall pong pooyan private_eye
    qbert riverraid road_runner seaquest skiing space_invaders star_gunner tennis up_n_down
    venture video_pinball yars_revenge
    """.split()
)

# OCAtari 2.2.1 was written for numpy 1. Under numpy 2 (NEP 50) arithmetic on the raw uint8
# RAM raises (``ram[i] - 256``, ``ram[i] * -1``: seaquest, hero, fishing_derby,
# montezuma_revenge), and numpy bools no longer index lists (air_raid). Its RAM is therefore
# handed over as _ByteRAM: int64 values whose single items are Python ints, except that ``~``
# stays within a byte (enduro relies on that). Against numpy 1 + raw uint8 RAM this gave the
# same boxes over 400 random steps in every listed game but yars_revenge (6 frames differ).


class _Byte(int):
    """A RAM byte as a Python int whose ``~`` stays in 0..255, as on a uint8."""

    __slots__ = ()

    def __invert__(self) -> int:
        return 255 - int(self)


class _ByteRAM(np.ndarray):
    """int64 RAM whose single items are :class:`_Byte` (numpy-1-like arithmetic in OCAtari)."""

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        return _Byte(int(out)) if isinstance(out, np.integer) else out


def _byte_ram(ram: np.ndarray) -> _ByteRAM:
    return np.asarray(ram, dtype=np.int64).view(_ByteRAM)


# OCAtari class name -> category. Names not listed are guessed from
# their words in _ocatari_category; the rest is ``other``.
_OCATARI_NAMES = {
    "player": """
        Player Player_Big Player_Small Chicken Frog PlayerOneHook Flipper Sentry
        AcropolisCommandPost
    """,
    "ball": "Ball",
    "other": "ExtraBullets",
    "projectile": """
        Missile EnemyMissile PlayerMissile PlayerMissileHorizontal PlayerMissileVertical
        Projectile Shot Bullet Bomb Enemy_Projectile Player_Projectile Enemy_Shot Player_Shot
        Player_Bullet Enemy_Missile Slayer_Shot Enemy_Weapon Arrow Stone Rock Fireball Knifes
        Dragon_Fire Dragon_Balls Airball Red_Ball LaserBeam Deathray SteelShot TurretBall
        ThrownCoconut FallingCoconut Blue_Projectile Purple_Projectile Yellow_Projectile
        Yellow_Ball Dynamite Barrel Swirl Enemy_Black_Shot Enemy_Blue_Shot Enemy_Green_Shot
        Enemy_Orange_Shot Enemy_Yellow_Shot
    """,
    "enemy": """
        Enemy Enemy100 Enemy25 Enemy50 Enemy75 Alien Warrior Shadow Pig MotherShip Asteroid
        GorgonShip BanditBomber Police Blue_Tank Yellow_Blue_Tank Boss Red_Thing Saucer
        Bouncecraft Charger Chriper Jumper Blocker Sentinel Duck FlyingDuck Owl Rabbit
        CentipedeSegment Flea Scorpion Spider EnemyHelicopter EnemyPlane Enemy_Bird Enemy_Red
        EnemyPart DonkeyKong Opponent_Big Opponent_Small Car Shark Bear Bird Clam Crab
        GreenFish Gopher DivingEnemy EnemyShip Hornet Monkey Krook Biplane Beast Slayers
        Fire_Mare Henchmen Killer_Moth Knife_Throwers Small_Enemy Snake Dragon
        Enemy_Final_Fighter Pest Ghost Octopus Tentacle Bat Phoenix Boss_Block_Blue
        Boss_Block_Green Boss_Block_Red Crocodile Logs Balloon Badguy Badguy_Head Coily
        GreenBall RedBall PurpleBall Jet Helicopter Tanker AcmeMine Turret Truck Submarine
        SurfaceSubmarine Satellite BombThrower FlyingEnemy Enemy_Black Enemy_Blue Enemy_Green
        Enemy_Orange Enemy_Yellow Hallmonsters Goblin Serpant Skeleton Troll TwoHeaded Skull
        BlackBat GreenDragon RedDragon YellowDragon PlayerTwoHook Diver
    """,
}
_OCATARI_CATEGORY: dict[str, str] = {
    cls: category for category, names in _OCATARI_NAMES.items() for cls in names.split()
}

# Per-game exceptions to the table above.
_OCATARI_GAME_CATEGORY: dict[str, dict[str, str]] = {
    "amidar": {"Chicken": "enemy"},  # the chasers of some levels
    "chopper_command": {"Truck": "other"},  # the convoy the player protects
    "crazy_climber": {"Helicopter": "other"},  # the goal at the top
    "keystone_kapers": {"Kop": "player", "Ball": "enemy"},  # the player is the Kop
    "private_eye": {"Car": "other"},  # scenery; the player's car is "Player"
    "seaquest": {"Diver": "other"},  # divers are rescued, not fought
    "video_pinball": {"Fish": "other", "Shark": "other"},  # bumper artwork
    "fishing_derby": {"Fish": "other"},  # the catch
}

# OCAtari objects that are HUD in fact, though some games do not flag them ``hud``.
_OCATARI_HUD_WORDS = ("score", "life", "lives", "timer", "hud", "amount", "available", "stock")
_OCATARI_HUD_NAMES = frozenset(
    {"Radar", "Radar_Content", "OxygenBar", "PowerBar", "BonusKops", "Crosshair"}
)


def _ocatari_category(game: str, cls: str) -> str:
    """Category of an OCAtari object class in one game (table, overrides, then a guess)."""
    special = _OCATARI_GAME_CATEGORY.get(game, {})
    if cls in special:
        return special[cls]
    if cls in _OCATARI_CATEGORY:
        return _OCATARI_CATEGORY[cls]
    low = cls.lower()
    if any(k in low for k in ("missile", "shot", "bullet", "projectile", "bomb", "torpedo")):
        return "projectile"
    if low.startswith("player"):
        return "player"
    if "enemy" in low:
        return "enemy"
    if low == "ball":
        return "ball"
    return "other"


def _ocatari_is_hud(obj: Any) -> bool:
    cls = type(obj).__name__
    if getattr(obj, "hud", False) or cls in _OCATARI_HUD_NAMES or cls.startswith("Mini"):
        return True
    low = cls.lower()
    return any(k in low for k in _OCATARI_HUD_WORDS)


def _import_ocatari() -> Any:
    """``ocatari.ram.extract_ram_info``; raises ObjectBackendUnavailableError if not importable."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # ocatari imports pygame
    try:
        return importlib.import_module("ocatari.ram.extract_ram_info")
    except Exception as err:  # missing package or runtime import, or a broken install
        raise ObjectBackendUnavailableError(
            f"The 'ocatari' object backend needs the OCAtari package ({err}). Install it with: "
            + OCATARI_INSTALL_HINT
        ) from err


def ocatari_available() -> bool:
    """Whether the OCAtari package imports in this environment."""
    try:
        _import_ocatari()
    except ObjectBackendUnavailableError:
        return False
    return True


class OCAtariObjectSource(ObjectSource):
    """OCAtari's RAM extraction driven from our own emulator's RAM.

    OCAtari's per-game ``_detect_objects_ram(objects, ram, hud)`` updates a list of tracked
    objects in place; this source keeps that list and restarts it when the episode's frame
    counter goes back (a reset). No OCAtari/gymnasium environment is created.

    Args:
        game: One of ``supported_games("ocatari")``.
        include_hud: Also return HUD objects (as category ``other``).

    Raises:
        UnsupportedGameError: If OCAtari does not cover the game.
        ObjectBackendUnavailableError: If OCAtari is not installed.
    """

    name = "ocatari"

    def __init__(self, game: str, include_hud: bool = False) -> None:
        if game not in OCATARI_GAMES:
            raise UnsupportedGameError(_unsupported_msg(game, "ocatari"))
        self._ram_info = _import_ocatari()
        self.game = game
        self.include_hud = include_hud
        self._module = game.replace("_", "")  # ocatari.ram.<module>: "ms_pacman" -> "mspacman"
        self._objects: list[Any] | None = None
        self._last_frame = -1

    def boxes(self, ale: Any, rgb_frame: np.ndarray) -> list[ObjectBox]:  # noqa: D102
        frame_no = int(ale.getEpisodeFrameNumber())
        if self._objects is None or frame_no < self._last_frame:
            self._objects = self._ram_info.init_objects(self._module, self.include_hud)
        self._last_frame = frame_no
        ram = _byte_ram(ale.getRAM())
        self._ram_info.detect_objects_ram(self._objects, ram, self._module, self.include_hud)
        out = []
        for obj in self._objects:
            if not obj:  # OCAtari's NoObject placeholders are falsy
                continue
            if obj.x == 0 and obj.y == 0:  # never-set objects (e.g. frogger's idle cars)
                continue
            cls = type(obj).__name__
            if _ocatari_is_hud(obj):
                if not self.include_hud:
                    continue
                category = "other"
            else:
                category = _ocatari_category(self.game, cls)
            clipped = _clip_xywh(*(float(v) for v in obj.xywh))
            if clipped is not None:
                out.append(ObjectBox(category, *clipped, name=cls))
        return out


# --------------------------------------------------------------------------------------------
# Entry points.


def supported_games(backend: str = "builtin") -> list[str]:
    """Games (ale-py ROM ids) a backend covers.

    Args:
        backend: ``"builtin"``, ``"ocatari"`` (listed whether or not it is installed) or
            ``"auto"`` (the games ``object_source(game)`` accepts in this environment).

    Returns:
        Sorted ROM ids.
    """
    if backend == "builtin":
        return sorted(_BUILTIN_DETECTORS)
    if backend == "ocatari":
        return sorted(OCATARI_GAMES)
    if backend == "auto":
        games = set(_BUILTIN_DETECTORS)
        if ocatari_available():
            games |= set(OCATARI_GAMES)
        return sorted(games)
    raise ValueError(f"unknown object backend {backend!r}; choose one of {BACKENDS}")


def _unsupported_msg(game: str, backend: str) -> str:
    oca_state = "installed" if ocatari_available() else f"not installed: {OCATARI_INSTALL_HINT}"
    return (
        f"No object ground truth for game {game!r} with backend {backend!r}. "
        f"Covered games: builtin ({', '.join(supported_games('builtin'))}); "
        f"ocatari ({oca_state}) ({', '.join(supported_games('ocatari'))})."
    )


def object_source(game: str, backend: str = "auto", *, include_hud: bool = False) -> ObjectSource:
    """Build the object ground-truth source for a game.

    Args:
        game: ale-py ROM id (``"pong"``).
        backend: ``"builtin"``, ``"ocatari"`` or ``"auto"`` (OCAtari when installed and it
            covers the game, else builtin).
        include_hud: Also return HUD objects (OCAtari only; as category ``other``).

    Returns:
        A source whose ``boxes(ale, rgb_frame)`` gives the frame's objects.

    Raises:
        UnsupportedGameError: If the chosen backend(s) do not cover the game; the message
            lists which games each backend covers.
        ObjectBackendUnavailableError: If ``backend="ocatari"`` and OCAtari is not installed.
        ValueError: For an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown object backend {backend!r}; choose one of {BACKENDS}")
    if backend == "ocatari":
        return OCAtariObjectSource(game, include_hud=include_hud)
    if backend == "auto" and game in OCATARI_GAMES and ocatari_available():
        return OCAtariObjectSource(game, include_hud=include_hud)
    if game in _BUILTIN_DETECTORS:
        return BuiltinObjectSource(game)
    raise UnsupportedGameError(_unsupported_msg(game, backend))


__all__ = [
    "BACKENDS",
    "CATEGORIES",
    "OCATARI_GAMES",
    "OCATARI_INSTALL_HINT",
    "BuiltinObjectSource",
    "OCAtariObjectSource",
    "ObjectBackendUnavailableError",
    "ObjectBox",
    "ObjectSource",
    "UnsupportedGameError",
    "object_source",
    "ocatari_available",
    "supported_games",
]

// twinstage overlay effects: alarm pulse + rim outline, data-quality grey/hatch,
// selection highlight. Included by twin_mesh.wgsl (shipped inside the wheel as
// package data of twinstage.viewer).
//
// Per-object state (one vec4 in s_objects, see twin_mesh.wgsl):
//   x = alarm level   0 none, 1 warning, 2 alarm
//   y = quality code  0 good, 1 stale/late (greyed), 2 bad (hatched),
//                     3 estimated with an uncertainty (thin light hatch over the colour)
//   z = selected      0/1
//   w = hidden        0/1

const LUMA = vec3<f32>(0.2126, 0.7152, 0.0722);

// Stale or late data: wash the colour out to a light grey so it reads as "not current".
fn twin_grey(color: vec3<f32>) -> vec3<f32> {
    let l = dot(color, LUMA);
    return mix(color, vec3<f32>(0.18 + 0.35 * l), 0.85);
}

// Bad data: diagonal hatching in screen space (stripes of `spacing` physical pixels).
fn twin_hatch(color: vec3<f32>, frag_xy: vec2<f32>, spacing: f32) -> vec3<f32> {
    let s = fract((frag_xy.x + frag_xy.y) / max(spacing, 2.0));
    let grey = twin_grey(color);
    return select(grey, vec3<f32>(0.02, 0.02, 0.02), s < 0.35);
}

// Estimated (assimilated) values with an uncertainty: the colour stays, thin light stripes
// across it say "an estimate ± σ", not a measurement (the inspect panel gives σ).
fn twin_uncertain(color: vec3<f32>, frag_xy: vec2<f32>, spacing: f32) -> vec3<f32> {
    let s = fract((frag_xy.x - frag_xy.y) / max(spacing, 2.0));
    return select(color, mix(color, vec3<f32>(1.0, 1.0, 1.0), 0.6), s < 0.22);
}

// 0..1 pulse; alarms pulse at `hz`, warnings at half of it.
fn twin_pulse(level: f32, time: f32, hz: f32) -> f32 {
    let f = select(hz * 0.5, hz, level > 1.5);
    return 0.5 + 0.5 * sin(6.2831853 * f * time);
}

// Fresnel-like rim: 0 where the surface faces the viewer, 1 at silhouettes.
fn twin_rim(normal: vec3<f32>, view: vec3<f32>, power: f32) -> f32 {
    return pow(1.0 - clamp(abs(dot(normal, view)), 0.0, 1.0), power);
}

// Alarm/warning: a pulsing emissive tint plus a bright outline at the silhouette.
fn twin_alarm(lit: vec3<f32>, level: f32, normal: vec3<f32>, view: vec3<f32>, time: f32, hz: f32,
              warn_color: vec3<f32>, alarm_color: vec3<f32>) -> vec3<f32> {
    if (level < 0.5) {
        return lit;
    }
    let alarm = level > 1.5;
    let c = select(warn_color, alarm_color, alarm);
    let p = twin_pulse(level, time, hz);
    // warnings keep most of their (colormap) colour; alarms are pulled hard towards red
    let strength = select(0.10 + 0.30 * p, 0.25 + 0.50 * p, alarm);
    let tinted = mix(lit, c, strength);
    let emissive = c * select(0.05 + 0.20 * p, 0.15 + 0.55 * p, alarm);
    let rim = twin_rim(normal, view, 2.0);
    return mix(tinted + emissive, c * 1.2, clamp(rim * 1.6, 0.0, 1.0));
}

// Selection: a cyan outline and a slight lift.
fn twin_selected(lit: vec3<f32>, normal: vec3<f32>, view: vec3<f32>, color: vec3<f32>) -> vec3<f32> {
    let rim = twin_rim(normal, view, 1.5);
    return mix(lit * 1.15 + color * 0.08, color, clamp(rim * 1.6, 0.0, 1.0));
}

// Colour of the outline hull around alarmed and selected assets: selection wins; alarms
// pulse between a dark and a bright red (warnings: amber), so the rim blinks even where
// the body's own tint is hard to see.
fn twin_outline_color(level: f32, selected: f32, time: f32, hz: f32,
                      warn_color: vec3<f32>, alarm_color: vec3<f32>, select_color: vec3<f32>) -> vec3<f32> {
    if (selected > 0.5) {
        return select_color;
    }
    let c = select(warn_color, alarm_color, level > 1.5);
    let p = twin_pulse(level, time, hz);
    return c * (0.35 + 0.9 * p);
}

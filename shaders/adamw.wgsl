// AdamW (PyTorch semantics) over a whole flattened tensor, fused and in place: the gradient's
// scale (clipping and accumulation), moments, bias correction and decoupled weight decay in one
// pass that reads w, grad, m, v once and writes w, m, v once.

@group(0) @binding(0) var<storage, read_write> w: array<{{ elem }}>;     // [n], updated in place
@group(0) @binding(1) var<storage, read_write> grad: array<{{ elem }}>;  // [n]
@group(0) @binding(2) var<storage, read_write> m: array<{{ elem }}>;     // [n], updated in place
@group(0) @binding(3) var<storage, read_write> v: array<{{ elem }}>;     // [n], updated in place
@group(0) @binding(4) var<storage, read_write> hp: array<f32>;           // lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale
@group(0) @binding(5) var<storage, read_write> info: array<u32>;         // n, threads per grid row

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    // A 2-D grid: one dimension alone is capped at 65535 workgroups.
    let idx = gid.y * info[1] + gid.x;
    if (idx >= info[0]) {
        return;
    }
    let lr = hp[0];
    let beta1 = hp[1];
    let beta2 = hp[2];
    let g = grad[idx] * hp[7];
    let m1 = beta1 * m[idx] + (1.0 - beta1) * g;
    let v1 = beta2 * v[idx] + (1.0 - beta2) * g * g;
    m[idx] = m1;
    v[idx] = v1;
    let update = (m1 / hp[5]) / (sqrt(v1 / hp[6]) + hp[3]);
    w[idx] = w[idx] * (1.0 - lr * hp[4]) - lr * update;
}

fn main() {
    let rt = faced::inference::litert::LiteRt::open(None).unwrap();
    use faced::inference::Backend;
    for m in [faced::models::BLAZEFACE_SHORT, faced::models::MOBILEFACENET, faced::models::BLAZEFACE_FULL, faced::models::ANTI_SPOOFING] {
        let (_, bytes) = faced::models::load_verified(None, &m).unwrap();
        let mut s = rt.compile(m.file, &bytes, 2).unwrap();
        println!("{} {:?} {:?}", m.file, s.inputs(), s.outputs());
        let inputs: Vec<Vec<f32>> = s.inputs().iter().map(|t| vec![0.1; t.len()]).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
        let mut outs = vec![Vec::new(); s.outputs().len()];
        s.run(&refs, &mut outs).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..50 { s.run(&refs, &mut outs).unwrap(); }
        println!("  {:.3} ms, out0[..4]={:?}", t.elapsed().as_secs_f64()*1000.0/50.0, &outs[0][..4]);
    }
}

import Foundation

/// pocketsam's pre/post-processing contract as `pocketsam.runtime.spec.write_contract` writes it
/// (`tests/golden/contract.json`, copied into the app's resources): the constants every implementation must share,
/// the graphs' input/output names and the bundle layout. Nothing here is retyped from Python: a value missing from
/// the file is an error.
public struct Contract: Sendable {
    public let specVersion: String
    /// Longest side after resizing; the encoder input is imageSize x imageSize.
    public let imageSize: Int
    /// RGB, 0..255 scale: the encoder normalizes inside; the host pads raw pixels with `padValueRaw`.
    public let pixelMean: [Double]
    public let pixelStd: [Double]
    public let padValueRaw: [Double]
    public let lowResMaskSize: Int
    public let numMaskOutputs: Int
    /// [start, end) of the multimask outputs (SamPredictor's `multimask_output=True`).
    public let multimaskSlice: Range<Int>
    public let singleMaskSlice: Range<Int>
    public let maskThreshold: Double
    public let labels: Labels
    /// Graph name ("encoder", "decoder", "decoder_cached") -> ordered input names / output names.
    public let inputs: [String: [String]]
    public let outputs: [String: [String]]
    /// How a bundle folder is laid out.
    public let bundle: BundleLayout
    /// The decoder's image-cache I/O, or nil when the contract has no `decoder_cached` graph.
    public let imageCache: ImageCacheIO?

    /// SAM's point label codes.
    public struct Labels: Equatable, Sendable {
        public let pad: Int
        public let background: Int
        public let foreground: Int
        public let boxTopLeft: Int
        public let boxBottomRight: Int
    }

    /// A bundle folder: `manifest` (file name) names every part's file; `parts` are graph names ("encoder",
    /// "decoder"); `formatExtensions`: format -> the extension of its part files (".mlpackage" for CoreML).
    public struct BundleLayout: Equatable, Sendable {
        public let manifest: String
        public let probe: String
        public let parts: [String]
        public let formatExtensions: [String: String]
    }

    /// The decoder's optional image cache (`decoder_cached`; ONNX exports have it, CoreML ones do not): the
    /// decoder returns the image-only part of its work as extra `outputs` and takes it back as `inputs`
    /// (`inputs[i]` feeds back `outputs[i]`), with `flag` 1 to read them, 0 to compute them (then the cached inputs
    /// are empty along axis 0). Read off the two decoder graphs, so no name is retyped here.
    public struct ImageCacheIO: Sendable {
        public let outputs: [String]
        public let inputs: [String]
        public let flag: String
        /// The shape of each of `inputs` after its axis 0 (the cache batch).
        public let rowShapes: [[Int]]
    }

    /// The ordered input names of `graph`.
    public func inputsOf(_ graph: String) throws -> [String] {
        guard let names = inputs[graph] else { throw PocketSAMError.contract("contract.json has no graph \"\(graph)\"") }
        return names
    }

    /// The ordered output names of `graph`.
    public func outputsOf(_ graph: String) throws -> [String] {
        guard let names = outputs[graph] else { throw PocketSAMError.contract("contract.json has no graph \"\(graph)\"") }
        return names
    }

    // MARK: reading contract.json

    public static func load(_ url: URL) throws -> Contract {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw PocketSAMError.contract("\(url.path): cannot read the contract (\(error.localizedDescription))")
        }
        return try parse(data)
    }

    public static func parse(_ data: Data) throws -> Contract {
        let doc: JSON
        do {
            doc = try JSON.parse(data)
        } catch {
            throw PocketSAMError.contract("contract.json: not valid JSON (\(error))")
        }
        let c = try field(doc, "constants")
        func num(_ key: String) throws -> Double {
            guard let v = try field(c, key).doubleValue else { throw bad(key, "a number") }
            return v
        }
        func int(_ key: String) throws -> Int {
            guard let v = try field(c, key).intValue else { throw bad(key, "an integer") }
            return v
        }
        func doubles(_ key: String) throws -> [Double] {
            guard let a = try field(c, key).arrayValue, let v = JSON.array(a).flatNumbers, v.count == a.count
            else { throw bad(key, "a list of numbers") }
            return v
        }
        func slice(_ key: String) throws -> Range<Int> {
            guard let a = try field(c, key).arrayValue, a.count == 2, let s = a[0].intValue, let e = a[1].intValue, s <= e
            else { throw bad(key, "[start, end]") }
            return s..<e
        }
        guard let version = try field(c, "spec_version").stringValue else { throw bad("spec_version", "a string") }
        let imageSize = try int("image_size")
        let pixelMean = try doubles("pixel_mean"), pixelStd = try doubles("pixel_std")
        let padValueRaw = try doubles("pad_value_raw")
        let lowResMaskSize = try int("low_res_mask_size"), numMaskOutputs = try int("num_mask_outputs")
        let multimaskSlice = try slice("multimask_slice"), singleMaskSlice = try slice("single_mask_slice")
        let maskThreshold = try num("mask_threshold")
        let lab = try field(c, "labels")
        func label(_ key: String) throws -> Int {
            guard let v = try field(lab, key).intValue else { throw bad("labels.\(key)", "an integer") }
            return v
        }
        let labels = Labels(pad: try label("pad"), background: try label("background"), foreground: try label("foreground"),
                            boxTopLeft: try label("box_top_left"), boxBottomRight: try label("box_bottom_right"))
        guard let graphs = try field(doc, "graphs").objectItems else { throw bad("graphs", "an object") }
        var inputs: [String: [String]] = [:]
        var outputs: [String: [String]] = [:]
        for (g, spec) in graphs {
            inputs[g] = try tensorNames(spec, "inputs", g)
            outputs[g] = try tensorNames(spec, "outputs", g)
        }
        for part in ["encoder", "decoder"] where inputs[part] == nil {
            throw PocketSAMError.contract("contract.json: graphs.\(part) is missing")
        }
        return Contract(
            specVersion: version, imageSize: imageSize, pixelMean: pixelMean, pixelStd: pixelStd,
            padValueRaw: padValueRaw, lowResMaskSize: lowResMaskSize, numMaskOutputs: numMaskOutputs,
            multimaskSlice: multimaskSlice, singleMaskSlice: singleMaskSlice, maskThreshold: maskThreshold,
            labels: labels, inputs: inputs, outputs: outputs,
            bundle: try bundleLayout(try field(doc, "bundle")),
            imageCache: try imageCacheOf(try field(doc, "graphs"))
        )
    }

    private static func field(_ obj: JSON, _ key: String) throws -> JSON {
        guard obj.objectItems != nil else { throw PocketSAMError.contract("contract.json: expected an object around \(key)") }
        guard let v = obj[key] else { throw PocketSAMError.contract("contract.json: \(key) is missing") }
        return v
    }

    private static func bad(_ key: String, _ expected: String) -> PocketSAMError {
        .contract("contract.json: \(key) must be \(expected)")
    }

    private static func tensors(_ graph: JSON, _ kind: String, _ name: String) throws -> [JSON] {
        guard let list = try field(graph, kind).arrayValue else { throw bad("\(name).\(kind)", "a list") }
        return list
    }

    private static func tensorNames(_ graph: JSON, _ kind: String, _ name: String) throws -> [String] {
        try tensors(graph, kind, name).map {
            guard let n = $0["name"]?.stringValue else { throw bad("\(name).\(kind)[].name", "a string") }
            return n
        }
    }

    private static func bundleLayout(_ b: JSON) throws -> BundleLayout {
        guard let manifest = try field(b, "manifest").stringValue else { throw bad("bundle.manifest", "a string") }
        guard let probe = try field(b, "probe").stringValue else { throw bad("bundle.probe", "a string") }
        guard let parts = try field(b, "parts").arrayValue?.compactMap(\.stringValue), !parts.isEmpty
        else { throw bad("bundle.parts", "a list of graph names") }
        guard let ext = try field(b, "format_extensions").objectItems else {
            throw bad("bundle.format_extensions", "an object")
        }
        var extensions: [String: String] = [:]
        for (format, v) in ext {
            guard let s = v.stringValue else { throw bad("bundle.format_extensions.\(format)", "a string") }
            extensions[format] = s
        }
        return BundleLayout(manifest: manifest, probe: probe, parts: parts, formatExtensions: extensions)
    }

    private static func imageCacheOf(_ graphs: JSON) throws -> ImageCacheIO? {
        guard let cached = graphs["decoder_cached"] else { return nil }
        let plain = try field(graphs, "decoder")
        let plainIn = try tensorNames(plain, "inputs", "decoder")
        let plainOut = try tensorNames(plain, "outputs", "decoder")
        let extraIn = try tensors(cached, "inputs", "decoder_cached").filter {
            !plainIn.contains($0["name"]?.stringValue ?? "")
        }
        let extraOut = try tensorNames(cached, "outputs", "decoder_cached").filter { !plainOut.contains($0) }
        func name(_ t: JSON) -> String { t["name"]?.stringValue ?? "" }
        // each cache output is fed back through the one extra input named after it (a prefix + its name)
        let fedBack: [JSON] = try extraOut.map { out in
            let matches = extraIn.filter { name($0) != out && name($0).hasSuffix(out) }
            guard matches.count == 1 else {
                throw PocketSAMError.contract("contract.json: no single cached input for the decoder output \(out)")
            }
            return matches[0]
        }
        let fedNames = fedBack.map(name)
        let flags = extraIn.map(name).filter { !fedNames.contains($0) }
        guard flags.count == 1 else {
            throw PocketSAMError.contract("contract.json: expected one image-cache flag input, got \(flags)")
        }
        let rowShapes: [[Int]] = try fedBack.map { t in
            guard let dims = t["shape"]?.arrayValue, dims.count >= 1 else { throw bad("\(name(t)).shape", "a list") }
            return try dims.dropFirst().map {
                guard let d = $0.intValue else { throw bad("\(name(t)).shape", "fixed after axis 0") }
                return d
            }
        }
        return ImageCacheIO(outputs: extraOut, inputs: fedNames, flag: flags[0], rowShapes: rowShapes)
    }
}

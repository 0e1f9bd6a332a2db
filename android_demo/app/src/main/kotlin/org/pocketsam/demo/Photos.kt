package org.pocketsam.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import androidx.exifinterface.media.ExifInterface
import org.pocketsam.core.PocketSamException
import org.pocketsam.core.Pixels
import org.pocketsam.core.RgbImage
import java.io.IOException
import java.io.InputStream

/** A photo as shown (upright `bitmap`) and as segmented (`rgb`, the same pixels). */
class Photo(val name: String, val bitmap: Bitmap, val rgb: RgbImage)

/** A photo that cannot be opened or decoded: the app says so and keeps the previous one. */
class PhotoException(message: String) : PocketSamException(message)

object Photos {
    /** Photos above this are decoded subsampled by a power of two (a phone's 50 MP photo would not fit the heap;
     *  the encoder sees at most 1024 x 1024 anyway). */
    private const val MAX_PIXELS = 12_000_000L

    /** The photo the user picked (a content URI from the photo picker). */
    fun fromUri(context: Context, uri: Uri): Photo =
        decode(uri.lastPathSegment ?: "photo") { context.contentResolver.openInputStream(uri) ?: throw IOException("no data") }

    /** The sample photo bundled with the app (a golden photo, copied into the assets at build time). */
    fun sample(context: Context): Photo = decode("sample.png") { context.assets.open("sample.png") }

    private fun decode(name: String, open: () -> InputStream): Photo {
        try {
            val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
            open().use { BitmapFactory.decodeStream(it, null, bounds) }
            if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw PhotoException("$name cannot be decoded as an image")
            val options = BitmapFactory.Options().apply {
                inSampleSize = Pixels.sampleSize(bounds.outWidth, bounds.outHeight, MAX_PIXELS)
                inPreferredConfig = Bitmap.Config.ARGB_8888
            }
            val decoded = open().use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw PhotoException("$name cannot be decoded as an image")
            val orientation = open().use { ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL) }
            val upright = upright(decoded, orientation)
            val argb = IntArray(upright.width * upright.height)
            upright.getPixels(argb, 0, upright.width, 0, 0, upright.width, upright.height)
            return Photo(name, upright, Pixels.rgbFromArgb(upright.width, upright.height, argb))
        } catch (e: IOException) {
            throw PhotoException("$name cannot be read (${e.message})")
        } catch (e: OutOfMemoryError) {
            throw PhotoException("$name is too large to decode on this device")
        }
    }

    /** The bitmap turned as its EXIF orientation says (as `pocketsam.runtime.image` does before segmenting). */
    private fun upright(bitmap: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_ROTATE_90 -> m.postRotate(90f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.postRotate(180f)
            ExifInterface.ORIENTATION_ROTATE_270 -> m.postRotate(270f)
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.postScale(-1f, 1f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.postScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.postRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.postRotate(270f); m.postScale(-1f, 1f) }
            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, true)
    }
}
